"""Flow-matching timesteps and step plans, including first-frame enhancement (FFE).

A plan is data: the timesteps of the first chunk and those of every later chunk. The
sampler walks them; nothing else about steps lives in the sampler.

Specs users type (`parse_plan`):
  "4", "2", "1", "50"           N steps for every chunk: [1000, 1000-1000/N, ...] warped by shift
  "1*", "2*"                     FFE: first chunk 4 steps, later chunks 1 or 2 (any "N*" works)
  "first=1000,750,500,250;rest=1000[;shift=5]"
                                 explicit timesteps before the warp (first optional: = rest)
"4" reproduces Self Forcing's list [1000, 750, 500, 250] warped by 5.0 ~ [1000, 937.5, 833.3, 625].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SHIFT = 5.0  # Wan 2.1 / Self Forcing
# Shifts outside this range squeeze every step after the first against 0 (tiny shifts) or every
# step against 1000 (huge ones, which sample pure noise); 1e-300 used to divide by zero.
SHIFT_RANGE = (1e-3, 1e3)
FFE_FIRST_STEPS = 4  # first-chunk steps of the "N*" shorthand (the paper's 1* and 2*)

ACCEPTED_SPECS = (
    "a step count like '4', '2', '1' or '50'; an FFE shorthand like '1*' or '2*' "
    "(first chunk 4 steps, later chunks 1 or 2); or explicit timesteps before the shift warp, "
    "'first=1000,750,500,250;rest=1000' (optional ';shift=5')"
)


def timestep_to_sigma(t: float) -> float:
    return t / NUM_TRAIN_TIMESTEPS


def sigma_to_timestep(sigma: float) -> float:
    return sigma * NUM_TRAIN_TIMESTEPS


def warp_sigma(sigma: float, shift: float) -> float:
    """Wan's timestep shift: sigma' = shift*s / (1 + (shift-1)*s); more time at high noise."""
    # min(): rounding can push sigma=1 a hair above 1 for shift < 1 (found by a property test).
    denominator = 1 + (shift - 1) * sigma
    if denominator <= 0:  # shift so small (1e-300) that shift - 1 rounds to -1: at sigma = 1 the limit is 1
        return 1.0
    return min(1.0, shift * sigma / denominator)


def uniform_timesteps(num_steps: int) -> list[float]:
    """N evenly spaced timesteps from 1000 down, before the warp: 4 -> [1000, 750, 500, 250]."""
    if num_steps < 1:
        raise ValueError(f"a plan needs at least 1 step, got {num_steps}")
    return [NUM_TRAIN_TIMESTEPS * (1 - k / num_steps) for k in range(num_steps)]


def warp_timesteps(timesteps: list[float], shift: float) -> tuple[float, ...]:
    """The timesteps after Wan's shift. A shift outside SHIFT_RANGE, or one that merges steps the
    user's list kept apart, is refused rather than sampled (pure noise, or steps that never denoise)."""
    low, high = SHIFT_RANGE
    if not math.isfinite(shift) or not low <= shift <= high:
        raise ValueError(f"shift must be a finite number in [{low:g}, {high:g}] (Wan uses {DEFAULT_SHIFT:g}), got {shift}")
    warped = tuple(sigma_to_timestep(warp_sigma(timestep_to_sigma(t), shift)) for t in timesteps)
    if any(a <= b for a, b in zip(warped, warped[1:])) or (warped and not warped[-1] > 0):
        shown = ", ".join(f"{t:.4g}" for t in warped[:6]) + (", ..." if len(warped) > 6 else "")
        raise ValueError(f"shift={_number(shift)} collapses the timesteps to [{shown}]: the steps would not denoise; "
                         f"use a moderate shift such as 1 to 10 (Wan uses {DEFAULT_SHIFT:g})")
    return warped


@dataclass(frozen=True)
class StepPlan:
    """Timesteps (after the warp) of the first chunk and of every later chunk."""

    first: tuple[float, ...]
    rest: tuple[float, ...]
    spec: str  # the canonical text form, what `format_plan` prints

    def timesteps_for_chunk(self, chunk_index: int) -> tuple[float, ...]:
        return self.first if chunk_index == 0 else self.rest

    def model_calls(self, num_chunks: int, *, cache_fill: bool = True) -> int:
        """Transformer passes needed for `num_chunks` chunks (denoising + cache filling)."""
        if num_chunks <= 0:
            return 0
        per_fill = 1 if cache_fill else 0
        return len(self.first) + per_fill + (num_chunks - 1) * (len(self.rest) + per_fill)

    def describe(self) -> str:
        first = ", ".join(f"{t:.1f}" for t in self.first)
        rest = ", ".join(f"{t:.1f}" for t in self.rest)
        if self.first == self.rest:
            return f"{self.spec}: {len(self.rest)} step(s) per chunk, timesteps [{rest}]"
        return (
            f"{self.spec}: first chunk {len(self.first)} step(s) [{first}], "
            f"later chunks {len(self.rest)} step(s) [{rest}]"
        )


def uniform_plan(num_steps: int, shift: float = DEFAULT_SHIFT) -> StepPlan:
    """N steps for every chunk."""
    steps = warp_timesteps(uniform_timesteps(num_steps), shift)
    return StepPlan(first=steps, rest=steps, spec=_with_shift(str(num_steps), shift))


def ffe_plan(rest_steps: int, first_steps: int = FFE_FIRST_STEPS, shift: float = DEFAULT_SHIFT) -> StepPlan:
    """First-frame enhancement: more steps for the first chunk, which carries its error forward."""
    if first_steps == rest_steps:
        return uniform_plan(rest_steps, shift)
    spec = f"{rest_steps}*" if first_steps == FFE_FIRST_STEPS else f"{rest_steps}*{first_steps}"
    return StepPlan(
        first=warp_timesteps(uniform_timesteps(first_steps), shift),
        rest=warp_timesteps(uniform_timesteps(rest_steps), shift),
        spec=_with_shift(spec, shift),
    )


def explicit_plan(first: list[float] | None, rest: list[float], shift: float = DEFAULT_SHIFT) -> StepPlan:
    """Timesteps typed by the user (before the warp), checked to be strictly decreasing in (0, 1000]."""
    for name, steps in (("rest", rest), ("first", first if first is not None else rest)):
        if not steps:
            raise ValueError(f"'{name}' needs at least one timestep; accepted: {ACCEPTED_SPECS}")
        if any(not 0 < t <= NUM_TRAIN_TIMESTEPS for t in steps):
            raise ValueError(f"'{name}' timesteps must lie in (0, 1000], got {steps}")
        if any(a <= b for a, b in zip(steps, steps[1:])):
            raise ValueError(f"'{name}' timesteps must be strictly decreasing, got {steps}")
        if steps[0] != NUM_TRAIN_TIMESTEPS:
            # Every chunk starts from pure noise; a first timestep below 1000 tells the model that
            # noise is partly clean, and 'first=4' (meant as 4 steps) would sample garbage silently.
            raise ValueError(f"'{name}' timesteps must start at 1000 (every chunk starts from pure noise), got "
                             f"{steps}; for step counts write '4', or '1*4' for 4 first-chunk steps and 1 after")
    first = rest if first is None else first
    text = f"first={_join(first)};rest={_join(rest)}"
    return StepPlan(
        first=warp_timesteps(list(first), shift), rest=warp_timesteps(list(rest), shift), spec=_with_shift(text, shift)
    )


_COUNT = re.compile(r"^(\d+)$")
_FFE = re.compile(r"^(\d+)\*(\d+)?$")


def parse_plan(spec: str, shift: float | None = None) -> StepPlan:
    """Parse a plan spec (see module docstring); a bad spec raises ValueError listing the accepted forms.

    `shift` given here is the default for specs that do not name one themselves.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty step plan; accepted: {ACCEPTED_SPECS}")
    text = spec.strip().replace(" ", "")
    parts = [p for p in text.split(";") if p]
    if not parts:  # only separators, e.g. ";"
        raise ValueError(f"empty step plan {spec!r}; accepted: {ACCEPTED_SPECS}")
    head, options = parts[0], dict(_split_option(p) for p in parts[1:])
    if "=" in head:
        options = dict(_split_option(p) for p in parts)
        head = ""
    unknown = set(options) - {"first", "rest", "shift"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in step plan {spec!r}; accepted: {ACCEPTED_SPECS}")
    plan_shift = _parse_shift(options.get("shift"), spec) if "shift" in options else (DEFAULT_SHIFT if shift is None else shift)

    if head:
        if "first" in options or "rest" in options:
            raise ValueError(f"step plan {spec!r} mixes a shorthand with first=/rest=; accepted: {ACCEPTED_SPECS}")
        if match := _COUNT.match(head):
            return uniform_plan(_positive(match.group(1), spec), plan_shift)
        if match := _FFE.match(head):
            first = _positive(match.group(2), spec) if match.group(2) else FFE_FIRST_STEPS
            return ffe_plan(_positive(match.group(1), spec), first, plan_shift)
        raise ValueError(f"unknown step plan {spec!r}; accepted: {ACCEPTED_SPECS}")

    if "rest" not in options:
        raise ValueError(f"step plan {spec!r} has no 'rest='; accepted: {ACCEPTED_SPECS}")
    first = _parse_list(options["first"], spec) if "first" in options else None
    return explicit_plan(first, _parse_list(options["rest"], spec), plan_shift)


def format_plan(plan: StepPlan) -> str:
    """The canonical spec text; `parse_plan(format_plan(p))` gives back `p`."""
    return plan.spec


def _split_option(part: str) -> tuple[str, str]:
    if "=" not in part:
        raise ValueError(f"expected key=value, got {part!r}; accepted: {ACCEPTED_SPECS}")
    key, value = part.split("=", 1)
    return key.lower(), value


def _parse_list(text: str, spec: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v != ""]
    except ValueError:
        raise ValueError(f"timesteps in {spec!r} must be numbers separated by commas; accepted: {ACCEPTED_SPECS}") from None


def _parse_shift(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"shift in {spec!r} must be a number, got {text!r}") from None
    low, high = SHIFT_RANGE
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"shift in {spec!r} must be a finite number in [{low:g}, {high:g}] (Wan uses "
                         f"{DEFAULT_SHIFT:g}), got {text!r}")
    return value


def _positive(text: str, spec: str) -> int:
    value = int(text)
    if value < 1 or value > NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"step counts must be between 1 and {NUM_TRAIN_TIMESTEPS}, got {value} in {spec!r}")
    return value


def _number(value: float) -> str:
    """Shortest text that parses back to the same float ('1000', '937.5', '333.3333333333333')."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _join(values) -> str:
    return ",".join(_number(v) for v in values)


def _with_shift(spec: str, shift: float) -> str:
    return spec if shift == DEFAULT_SHIFT else f"{spec};shift={_number(shift)}"
