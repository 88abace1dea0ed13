"""The causal transformer against independent references.

* bidirectional (chunk_frames >= F) == diffusers' own WanTransformer3DModel, same weights;
* chunk-by-chunk with a KV cache == one full block-causal pass (x-transformers' cached-vs-
  uncached test), also with a rolling cache before it rolls;
* block-causality itself: a later frame never changes an earlier frame's output.
"""

import pytest
import torch
from diffusers import WanTransformer3DModel

from asd_core.config import tiny_config, wan21_t2v_1_3b
from asd_core.model import CausalWanTransformer

# Eager flex attention (the CPU reference implementation) warns that it is unfused: known here.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CausalWanTransformer(tiny_config(chunk_frames=2)).eval()


def test_state_dict_is_diffusers_layout_and_bidirectional_forward_is_wan():
    torch.manual_seed(1)
    config = tiny_config(chunk_frames=8)
    ours = CausalWanTransformer(config).eval()
    reference = WanTransformer3DModel(**config.diffusers_kwargs()).eval()
    assert set(ours.state_dict()) == set(reference.state_dict())
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 6, 8, 8)
    context = torch.randn(2, 7, config.text_dim)
    t = torch.tensor([123.0, 876.0])
    with torch.no_grad():
        expected = reference(x, t, context).sample
        got = ours(x, t, context)
    assert relative_error(got, expected) < 1e-6


def test_real_wan_1_3b_config_builds_on_meta_with_diffusers_keys():
    config = wan21_t2v_1_3b()
    with torch.device("meta"):
        ours = CausalWanTransformer(config)
        reference = WanTransformer3DModel(**config.diffusers_kwargs())
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours_shapes == reference_shapes
    assert ours_shapes["blocks.29.attn1.to_q.weight"] == (1536, 1536)
    assert config.tokens_per_frame(60, 104) == 1560


@pytest.fixture(params=["dense", "flex"])
def backend(request, model):
    """The full block-causal pass with either mask: dense SDPA, or flex attention's block mask."""
    model.attention_backend = request.param
    yield request.param
    model.attention_backend = "auto"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kv_cached_chunks_equal_full_block_causal_pass(model, seed, backend):
    generator = torch.Generator().manual_seed(seed)
    batch, frames, chunk = 2, 6, model.config.chunk_frames
    x = torch.randn(batch, 16, frames, 8, 8, generator=generator)
    context = torch.randn(batch, 5, model.config.text_dim, generator=generator)
    t = torch.rand(batch, frames, generator=generator) * 1000  # diffusion forcing: a t per frame
    with torch.no_grad():
        full = model(x, t, context)
        cache = model.new_kv_cache(batch_size=batch, capacity_frames=frames, latent_height=8, latent_width=8)
        pieces = []
        for start in range(0, frames, chunk):
            part = slice(start, start + chunk)
            pieces.append(model(x[:, :, part], t[:, part], context, frame_offset=start, kv_cache=cache, update_cache=True))
    assert relative_error(torch.cat(pieces, dim=2), full) < 1e-4


def test_uncommitted_denoising_pass_leaves_cache_unchanged(model):
    x = torch.randn(1, 16, 4, 8, 8)
    context = torch.randn(1, 5, model.config.text_dim)
    with torch.no_grad():
        cache = model.new_kv_cache(batch_size=1, capacity_frames=4, latent_height=8, latent_width=8)
        model(x[:, :, :2], 0.0, context, kv_cache=cache, update_cache=True)
        first = model(x[:, :, 2:], 500.0, context, frame_offset=2, kv_cache=cache)  # a denoising step
        model(torch.randn(1, 16, 2, 8, 8), 900.0, context, frame_offset=2, kv_cache=cache)  # another
        again = model(x[:, :, 2:], 500.0, context, frame_offset=2, kv_cache=cache)
    assert cache.length_frames == 2
    assert torch.equal(first, again)


def test_rolling_cache_before_it_rolls_equals_full_pass(model):
    x = torch.randn(1, 16, 6, 8, 8)
    context = torch.randn(1, 5, model.config.text_dim)
    t = torch.rand(1, 6) * 1000
    with torch.no_grad():
        full = model(x, t, context)
        cache = model.new_kv_cache(batch_size=1, capacity_frames=6, latent_height=8, latent_width=8,
                                   rolling=True, sink_frames=2)
        pieces = [model(x[:, :, s:s + 2], t[:, s:s + 2], context, frame_offset=s, kv_cache=cache, update_cache=True)
                  for s in range(0, 6, 2)]
    assert cache.evicted_frames == 0
    assert relative_error(torch.cat(pieces, dim=2), full) < 1e-4


def test_rolled_cache_attends_exactly_to_sink_plus_window(model):
    """After rolling, each chunk attends to exactly the sink frames, the window and itself.

    Cache of 6 frames, 2 sink frames, chunks of 2. What each chunk sees while it is made:
    chunk 0 {0,1}; 1 {0-3}; 2 {0-5}; 3 evicts 2-3: {0,1,4-7}; 4 evicts 4-5: {0,1,6-9}.
    The reference is one full pass whose mask gives every chunk exactly that set.
    """
    chunk, frames, tokens_per_frame = 2, 10, 16
    x = torch.randn(1, 16, frames, 8, 8)
    context = torch.randn(1, 5, model.config.text_dim)
    t = torch.rand(1, frames) * 1000
    visible_per_chunk = [{0, 1}, {0, 1, 2, 3}, {0, 1, 2, 3, 4, 5}, {0, 1, 4, 5, 6, 7}, {0, 1, 6, 7, 8, 9}]
    with torch.no_grad():
        cache = model.new_kv_cache(batch_size=1, capacity_frames=6, latent_height=8, latent_width=8,
                                   rolling=True, sink_frames=2)
        pieces = [model(x[:, :, s:s + chunk], t[:, s:s + chunk], context, frame_offset=s, kv_cache=cache,
                        update_cache=True) for s in range(0, frames, chunk)]
        assert cache.evicted_frames == 4 and cache.length_frames == 6

        allowed = torch.zeros(frames, frames, dtype=torch.bool)
        for query in range(frames):
            allowed[query, sorted(visible_per_chunk[query // chunk])] = True
        mask = allowed.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
        # The reference is the model's own full pass with this mask swapped in for the block-causal one.
        import asd_core.model as model_module

        original = model_module.block_causal_mask
        model_module.block_causal_mask = lambda *args, **kwargs: mask
        try:
            reference = model(x, t, context)
        finally:
            model_module.block_causal_mask = original
    assert relative_error(torch.cat(pieces, dim=2), reference) < 1e-4
    # and the rolled chunks really differ from an unbounded cache (the test can fail)
    with torch.no_grad():
        unbounded = model(x, t, context)
    assert relative_error(pieces[-1], unbounded[:, :, 8:10]) > 1e-3


def test_later_frames_do_not_change_earlier_outputs(model):
    x = torch.randn(1, 16, 6, 8, 8)
    context = torch.randn(1, 5, model.config.text_dim)
    changed = x.clone()
    changed[:, :, 4:] = torch.randn_like(changed[:, :, 4:])
    with torch.no_grad():
        a, b = model(x, 400.0, context), model(changed, 400.0, context)
    assert torch.equal(a[:, :, :4], b[:, :, :4])
    assert not torch.allclose(a[:, :, 4:], b[:, :, 4:])


def test_features_and_bad_inputs(model):
    x = torch.randn(1, 16, 2, 8, 8)
    context = torch.randn(1, 5, model.config.text_dim)
    out, features = model(x, 100.0, context, return_features=(0, 1))
    assert out.shape == x.shape and len(features) == 2 and features[0].shape == (1, 2 * 16, model.config.width)
    with pytest.raises(ValueError, match="timestep of shape"):
        model(x, torch.zeros(3), context)
    with pytest.raises(ValueError, match="patch size"):
        model(torch.randn(1, 16, 2, 7, 8), 0.0, context)
    cache = model.new_kv_cache(batch_size=1, capacity_frames=2, latent_height=8, latent_width=8)
    model(x, 0.0, context, kv_cache=cache, update_cache=True)
    with pytest.raises(ValueError, match="enable rolling"):
        model(x, 0.0, context, frame_offset=2, kv_cache=cache, update_cache=True)


def test_gradient_checkpointing_gives_same_gradients(model):
    x = torch.randn(1, 16, 4, 8, 8)
    context = torch.randn(1, 5, model.config.text_dim)
    t = torch.tensor([[100.0, 100.0, 700.0, 700.0]])

    def grads():
        model.zero_grad()
        with torch.enable_grad():
            model(x, t, context).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    for p in model.parameters():
        p.requires_grad_(True)
    plain = grads()
    model.gradient_checkpointing = True
    try:
        checkpointed = grads()
    finally:
        model.gradient_checkpointing = False
        model.zero_grad(set_to_none=True)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


def test_text_context_is_zero_padded_to_text_len_as_wan_does():
    """A 12-token prompt in a text_len=16 model equals the same prompt padded by hand with zeros
    (the padding tokens embed to the text MLP's bias and are attended to); text_len=None differs."""
    torch.manual_seed(0)
    padded_model = CausalWanTransformer(tiny_config(text_len=16)).eval()
    plain_model = CausalWanTransformer(tiny_config()).eval()
    plain_model.load_state_dict(padded_model.state_dict())
    x = torch.randn(1, 16, 2, 4, 4)
    context = torch.randn(1, 12, 32)
    by_hand = torch.cat([context, torch.zeros(1, 4, 32)], dim=1)
    with torch.no_grad():
        padded = padded_model(x, 500.0, context)
        assert torch.equal(padded, plain_model(x, 500.0, by_hand))
        assert (padded - plain_model(x, 500.0, context)).abs().max() > 1e-3
        longer = torch.cat([by_hand, torch.randn(1, 3, 32)], dim=1)  # cut where Wan's tokenizer cuts
        assert torch.equal(padded_model(x, 500.0, longer), padded)


def test_text_len_is_checked_and_wan_configs_pad_to_512():
    assert wan21_t2v_1_3b().text_len == 512
    for bad in (0, -3, 2.5, "512", True):
        with pytest.raises(ValueError, match="text_len must be a positive number of tokens or None"):
            tiny_config(text_len=bad)
    model = CausalWanTransformer(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"text context of shape \(1, 5, 48\) does not fit this model.*32"):
        model(torch.randn(1, 16, 2, 4, 4), 500.0, torch.randn(1, 5, 48))


def test_flex_block_mask_gives_the_dense_masks_outputs(model):
    """Training's block-sparse attention against the dense (S, S) mask. Flex attention has no
    backward on the CPU (torch raises), so gradients are compared on CUDA only; `auto` keeps
    CPU training dense and a CPU flex request with gradients is a clear error."""
    from torch.nn.attention.flex_attention import create_mask

    from asd_core.attention import block_causal_block_mask, block_causal_mask

    dense = block_causal_mask(6, 16, 2, 0, "cpu")
    sparse = block_causal_block_mask(6, 16, 2, 0, torch.device("cpu"))
    assert torch.equal(create_mask(sparse.mask_mod, None, None, 96, 96, "cpu").squeeze(), dense)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 6, 8, 8, generator=generator)
    context = torch.randn(1, 5, model.config.text_dim, generator=generator)
    t = torch.rand(1, 6, generator=generator) * 1000
    outputs = {}
    for name in ("dense", "flex"):
        model.attention_backend = name
        with torch.no_grad():
            outputs[name] = model(x, t, context)
    try:
        assert relative_error(outputs["flex"], outputs["dense"]) < 1e-5
        with pytest.raises(ValueError, match="no CPU backward.*attention_backend='dense'"):
            model(x.requires_grad_(), t, context)
        model.attention_backend = "fast"
        with pytest.raises(ValueError, match="attention_backend must be auto, flex or dense"), torch.no_grad():
            model(x, t, context)
    finally:
        model.attention_backend = "auto"
