"""Step plans: the Self Forcing list, FFE shorthands, the spec parser (property-tested)."""

import pytest
from diffusers import FlowMatchEulerDiscreteScheduler
from hypothesis import example, given
from hypothesis import strategies as st

from asd_core.schedule import (
    ACCEPTED_SPECS,
    format_plan,
    parse_plan,
    uniform_timesteps,
    warp_sigma,
)


def test_four_steps_is_the_self_forcing_list():
    plan = parse_plan("4")
    assert uniform_timesteps(4) == [1000, 750, 500, 250]
    assert plan.first == plan.rest
    assert plan.rest == pytest.approx([1000.0, 937.5, 833.3333333, 625.0])


def test_warp_matches_diffusers_flow_match_scheduler():
    """Independent reference: diffusers' scheduler with explicit sigmas and shift 5."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    scheduler.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    assert parse_plan("4").rest == pytest.approx(scheduler.timesteps.tolist(), rel=1e-6)


def test_ffe_shorthands():
    one, two = parse_plan("1*"), parse_plan("2*")
    assert one.first == parse_plan("4").rest and one.rest == (1000.0,)
    assert two.first == parse_plan("4").rest and two.rest == pytest.approx([1000.0, 833.3333333])
    assert [len(one.timesteps_for_chunk(i)) for i in range(3)] == [4, 1, 1]
    assert one.model_calls(7) == 4 + 1 + 6 * 2
    assert "first chunk 4 step(s)" in one.describe()


def test_explicit_spec_from_the_issue():
    plan = parse_plan("first=1000,750,500,250;rest=1000")
    assert plan.first == parse_plan("4").rest and plan.rest == (1000.0,)


def test_shift_option_and_default():
    assert parse_plan("1;shift=1").rest == (1000.0,)
    assert parse_plan("2;shift=1").rest == (1000.0, 500.0)
    assert parse_plan("2", shift=1.0).rest == (1000.0, 500.0)
    assert parse_plan("2;shift=1", shift=3.0).rest == (1000.0, 500.0)  # the spec's own shift wins


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty"),
        ("fast", "unknown step plan"),
        ("0", "between 1 and 1000"),
        ("3**", "unknown step plan"),
        ("first=1000", "no 'rest='"),
        ("rest=500,600", "strictly decreasing"),
        ("rest=0", "(0, 1000]"),
        ("first=4;rest=1000", "must start at 1000"),
        ("rest=750,500", "must start at 1000"),
        ("rest=a,b", "numbers separated by commas"),
        ("4;speed=2", "unknown key"),
        ("4;rest=1000", "mixes a shorthand"),
        ("4;shift=-1", "must be a finite number in [0.001, 1000]"),
        # issue 25 item 6: an infinite shift used to be accepted (every step at 1000: pure noise),
        # 1e-300 raised ZeroDivisionError, 1e300 collapsed the steps silently
        ("4;shift=inf", "must be a finite number in"),
        ("4;shift=nan", "must be a finite number in"),
        ("4;shift=1e-300", "must be a finite number in"),
        ("1*;shift=1e-300", "must be a finite number in"),
        ("4;shift=1e300", "must be a finite number in"),
        ("rest=1000,999.9999999999999;shift=1000", "collapses the timesteps"),
        (";", "empty step plan"),
    ],
)
def test_bad_specs_say_what_is_accepted(spec, fragment):
    with pytest.raises(ValueError) as error:
        parse_plan(spec)
    assert fragment in str(error.value)


def test_shifts_across_the_accepted_range_stay_valid():
    """The ends of SHIFT_RANGE still give distinct steps for the longest plan (1000 steps)."""
    assert parse_plan("4;shift=0.01").rest[1] < 100 and parse_plan("50;shift=100").rest[-1] > 600
    assert parse_plan("1000;shift=0.001").rest[-1] > 0 and parse_plan("1000;shift=1000").rest[-2] < 1000
    from asd_core.schedule import warp_sigma

    assert warp_sigma(1.0, 1e-300) == 1.0  # was ZeroDivisionError


def test_unknown_spec_lists_accepted_forms():
    with pytest.raises(ValueError, match="accepted"):
        parse_plan("turbo")
    assert "1*" in ACCEPTED_SPECS and "first=" in ACCEPTED_SPECS


steps = st.integers(min_value=1, max_value=1000)
shifts = st.floats(min_value=0.1, max_value=20.0, allow_nan=False)


@given(steps, shifts)
def test_uniform_plans_are_strictly_decreasing_in_range_and_round_trip(n, shift):
    plan = parse_plan(f"{n};shift={shift!r}")
    assert len(plan.rest) == n and plan.rest[0] == pytest.approx(1000.0)
    assert all(0 < t <= 1000 for t in plan.rest)
    assert all(a > b for a, b in zip(plan.rest, plan.rest[1:]))
    assert parse_plan(format_plan(plan)) == plan


@given(steps, st.integers(min_value=1, max_value=64))
def test_ffe_plans_round_trip(rest, first):
    plan = parse_plan(f"{rest}*{first}")
    assert len(plan.first) == first and len(plan.rest) == rest
    assert parse_plan(format_plan(plan)) == plan


@given(st.lists(st.floats(min_value=0.5, max_value=1000.0, allow_nan=False), min_size=1, max_size=8, unique=True))
def test_explicit_lists_parse_warp_monotonically_and_round_trip(values):
    values = [1000.0] + sorted((v for v in values if v < 1000), reverse=True)
    text = ",".join(repr(v) for v in values)
    plan = parse_plan(f"rest={text}")
    assert len(plan.rest) == len(values)
    assert all(a > b for a, b in zip(plan.rest, plan.rest[1:]))
    assert parse_plan(format_plan(plan)) == plan


@given(st.text(max_size=20))
@example(";")  # found by hypothesis in CI: separators only once raised IndexError
@example(" ; ;")
def test_parser_never_fails_with_anything_but_value_error(text):
    try:
        plan = parse_plan(text)
    except ValueError:
        return
    assert plan.rest and plan.first


@given(st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=1.0, max_value=10.0))
def test_warp_is_monotone_and_keeps_the_ends(sigma, shift):
    assert 0.0 <= warp_sigma(sigma, shift) <= 1.0 + 1e-12
    assert warp_sigma(sigma, shift) >= sigma - 1e-12  # shift >= 1 moves time toward high noise
    assert warp_sigma(1.0, shift) == pytest.approx(1.0) and warp_sigma(0.0, shift) == 0.0
