"""The one request validator (asd_core.request) that the CLI, the API and the nodes share."""

import pytest
import torch

from asd_core import request
from asd_core.config import tiny_config, wan21_t2v_1_3b
from asd_core.request import API_NAMES, CLI_NAMES, NODE_NAMES, RequestError, check_request, estimate_memory

WAN = wan21_t2v_1_3b()


def test_wan_sizes_give_wan_latents():
    shape = check_request(WAN, frames=81, width=832, height=480)
    assert (shape.latent_frames, shape.latent_height, shape.latent_width) == (21, 60, 104)
    latent = check_request(WAN, frames=21, width=104, height=60, names=API_NAMES)
    assert (latent.latent_frames, latent.latent_height, latent.latent_width) == (21, 60, 104)


@pytest.mark.parametrize("names, frames, message", [
    (CLI_NAMES, 82, "--frames 82: the Wan VAE needs 4k+1 frames, e.g. 81 or 85; with chunks of 3 latent frames use "
                    "--frames 81 or 93"),
    (NODE_NAMES, 77, "frames 77: 77 frames make 20 latent frames, which do not split into chunks of 3; use frames 69 "
                     "or 81"),
    (API_NAMES, 20, "num_frames 20: 20 latent frames do not split into chunks of 3; use num_frames 18 or 21"),
    # the suggestion never exceeds the model's 1024 RoPE frame positions (1023 = 341 chunks of 3)
    (API_NAMES, 1024, "num_frames 1024: 1024 latent frames do not split into chunks of 3; use num_frames 1023 or "
                      "fewer (the RoPE frame positions allow no more)"),
    (CLI_NAMES, 4 * 1028 + 1, "1029 latent frames exceed the 1024 frame positions this model has (rope_max_seq_len; "
                              "a rolling window does not extend them); use --frames 4089 or fewer"),
])
def test_frame_counts_name_the_counts_that_work(names, frames, message):
    width, height = (832, 480) if names["pixels"] else (104, 60)
    with pytest.raises(RequestError) as error:
        check_request(WAN, frames=frames, width=width, height=height, names=names)
    assert message in str(error.value)


def test_a_window_is_suggested_when_it_would_fit():
    """The rolling window caps the KV cache; when the cache is what does not fit, the refusal
    names a window that does (nodes and API; the CLI has no window setting)."""
    def need(window=None):
        return estimate_memory(WAN, batch=1, latent_frames=81, latent_height=60, latent_width=104,
                               window_frames=window, dtype=torch.bfloat16).total

    budget = need(window=21)
    assert need() > budget
    try:
        request.device_memory, saved = (lambda device: budget), request.device_memory
        with pytest.raises(RequestError) as error:
            check_request(WAN, frames=81, width=104, height=60, device="cpu", dtype=torch.bfloat16, names=API_NAMES)
        assert "or a rolling max_cache_frames of 21 latent frames" in str(error.value)
        with pytest.raises(RequestError) as error:
            check_request(WAN, frames=321, width=832, height=480, device="cpu", dtype=torch.bfloat16, names=CLI_NAMES)
        assert "window" not in str(error.value) and "use --frames " in str(error.value)
    finally:
        request.device_memory = saved


def test_wan_kv_cache_estimate_matches_the_cache_the_model_allocates():
    """KV cache bytes come from the config: 30 layers x 2 x frames x 1560 tokens x 1536 channels x 2 bytes."""
    memory = estimate_memory(WAN, batch=1, latent_frames=21, latent_height=60, latent_width=104, dtype=torch.bfloat16)
    assert memory.kv_cache == 2 * 30 * 21 * 1560 * 1536 * 2
    tiny = tiny_config(chunk_frames=2)
    from asd_core.model import CausalWanTransformer

    cache = CausalWanTransformer(tiny).new_kv_cache(batch_size=2, capacity_frames=6, latent_height=8, latent_width=8)
    assert estimate_memory(tiny, batch=2, latent_frames=6, latent_height=8, latent_width=8).kv_cache == cache.nbytes()


def test_device_memory_is_known_on_the_cpu():
    assert request.device_memory("cpu") > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(frames=0), "--frames must be a whole number >= 1, got 0"),
    (dict(frames=9.0), "--frames must be a whole number >= 1, got 9.0"),
    (dict(width=-16), "--width must be a whole number >= 1"),
    (dict(width=830), "--width/--height must be multiples of 16x16 (VAE 8x, patch 2x2), got 830x480; try 832x480"),
    (dict(context_noise=-1), "--context-noise: context_noise is a timestep in [0, 1000], got -1"),
    (dict(cfg_scale=float("nan")), "--cfg-scale must be a finite number"),
    (dict(window_frames=4), "window_frames=4 is too small: the rolling cache keeps 3 sink frames and needs room for a "
                            "chunk of 3 more, so use >= 6"),
    (dict(prefix_frames=1023), "a prefix of 1023 latent frames leaves no room for a chunk of 3"),
])
def test_each_rule_is_one_line(kwargs, message):
    args = dict(frames=81, width=832, height=480) | kwargs
    with pytest.raises(RequestError) as error:
        check_request(WAN, **args)
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1
