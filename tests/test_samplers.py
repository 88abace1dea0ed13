"""`asd_core.samplers`: every sampler by name, each family's default, and the arguments each takes.

The samplers themselves are tested against their references (tests/test_reference_*.py); here
`sample_with` must hand each one the request unchanged (the same video as calling it directly,
bitwise), and refuse what a sampler cannot do."""

import pytest
import torch

from asd_core.causvid import sample_causvid_video
from asd_core.config import tiny_config
from asd_core.ema_sink import sample_ema_sink_video, sample_repositioned_sink_video
from asd_core.families import BY_NAME, FAMILIES
from asd_core.model import CausalWanTransformer
from asd_core.rolling_forcing import sample_rolling_video
from asd_core.sampler import sample_video
from asd_core.samplers import FAMILY_SAMPLERS, SAMPLERS, family_window, resolve_sampler, sample_with, sampler_for
from asd_core.schedule import parse_plan

H = W = 4
CHUNK = 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=CHUNK)).eval()


@pytest.fixture(scope="module")
def request_(model):
    context = torch.randn(1, 5, model.config.text_dim, generator=torch.Generator().manual_seed(7))
    return dict(plan=parse_plan("2"), context=context, num_frames=8, latent_height=H, latent_width=W, seeds=[3])


def video(chunks) -> torch.Tensor:
    return torch.cat(list(chunks), dim=2)


def test_every_family_has_a_known_default_sampler():
    assert set(FAMILY_SAMPLERS) <= {family.name for family in FAMILIES}
    assert {sampler_for(family) for family in FAMILIES} <= set(SAMPLERS)
    assert sampler_for(BY_NAME["reward_forcing"]) == "ema_sink"
    assert sampler_for(BY_NAME["infinite_forcing"]) == "repositioned_sink"
    assert sampler_for(BY_NAME["rolling_forcing"]) == "rolling_forcing"
    assert sampler_for(BY_NAME["causvid"]) == "causvid"
    assert sampler_for(BY_NAME["one_forcing"]) == sampler_for(None) == "self_forcing"


def test_auto_takes_the_family_and_unknown_names_are_refused():
    assert resolve_sampler("auto", BY_NAME["reward_forcing"]) == "ema_sink"
    assert resolve_sampler(None, None) == "self_forcing"
    assert resolve_sampler("rolling_forcing", BY_NAME["reward_forcing"]) == "rolling_forcing"
    with pytest.raises(ValueError, match="unknown sampler 'ema'; known: auto, self_forcing"):
        resolve_sampler("ema", None)


@pytest.mark.parametrize("name,direct", [
    ("self_forcing", lambda m, **k: sample_video(m, max_cache_frames=6, sink_frames=2, **k)),
    ("causvid", sample_causvid_video),
    ("rolling_forcing", lambda m, **k: sample_rolling_video(m, attention_frames=6, **k)),
    ("repositioned_sink", lambda m, **k: sample_repositioned_sink_video(m, window_frames=6, sink_frames=2, **k)),
    ("ema_sink", lambda m, **k: sample_ema_sink_video(m, window_frames=6, sink_frames=2, **k)),
])
def test_sample_with_is_the_sampler_itself(model, request_, name, direct, one_torch_thread):
    settings = dict(max_cache_frames=6, sink_frames=2) if name != "causvid" else {}
    ours = video(sample_with(name, model, **settings, **request_))
    assert torch.equal(ours, video(direct(model, **request_)))


def test_moving_sinks_differ_from_the_fixed_sink_once_the_window_rolls(model, request_, one_torch_thread):
    window = dict(max_cache_frames=6, sink_frames=2)
    fixed = video(sample_with("self_forcing", model, **window, **request_))
    for name in ("repositioned_sink", "ema_sink", "rolling_forcing"):
        moved = video(sample_with(name, model, **window, **request_))
        assert not torch.equal(moved[:, :, 6:], fixed[:, :, 6:]), name


def test_moving_sinks_without_a_window_are_the_whole_video_cache(model, request_, one_torch_thread):
    whole = video(sample_video(model, **request_))
    for name in ("repositioned_sink", "ema_sink"):
        assert torch.equal(video(sample_with(name, model, **request_)), whole), name


def test_rolling_forcing_refuses_what_it_cannot_do(model, request_):
    prefix = torch.zeros(1, model.config.in_channels, CHUNK, H, W)
    with pytest.raises(ValueError, match="rolling_forcing sampler takes no prefix"):
        sample_with("rolling_forcing", model, prefix=prefix, **request_)
    with pytest.raises(ValueError, match="sink is the first chunk"):
        sample_with("rolling_forcing", model, max_cache_frames=6, sink_frames=1, **request_)


@pytest.mark.parametrize("family, window", [
    ("longlive", {"max_cache_frames": 12, "sink_frames": 3}),
    ("reward_forcing", {"max_cache_frames": 9, "sink_frames": 3}),
    ("infinite_forcing", {"max_cache_frames": 6, "sink_frames": 1}),
    ("self_forcing", {"max_cache_frames": None, "sink_frames": None}),  # whole video; sinks: one chunk if rolled
    (None, {"max_cache_frames": None, "sink_frames": None}),  # plain Wan weights
])
def test_family_window_is_the_releases_cache(family, window):
    assert family_window(None if family is None else BY_NAME[family]) == window
