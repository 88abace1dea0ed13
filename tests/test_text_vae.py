"""Text conditioning and the Wan VAE codec on tiny random configs."""

import pytest
import torch

from asd_core.text import ToyTextConfig, ToyTextEncoder, conditioning_from_comfy, tokenize
from asd_core.vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    LatentCodec,
    from_raw,
    latent_frames_for,
    pixels_to_video,
    to_raw,
    video_to_pixels,
)


@pytest.fixture(scope="module")
def codec():
    return LatentCodec.tiny_random(seed=3)


def test_streaming_decode_equals_diffusers_decode(codec):
    latents = torch.randn(2, 16, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    whole = codec.decode(latents)
    stream = codec.decode_stream()
    pieces = [stream.push(latents[:, :, :2]), stream.push(latents[:, :, 2:3]), stream.push(latents[:, :, 3:])]
    assert [p.shape[2] for p in pieces] == [5, 4, 8]  # first latent frame -> 1 pixel frame, later -> 4
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=1e-5, atol=1e-5)
    # a second stream starts fresh: the cache of the first video does not leak into it
    again = codec.decode_stream()
    torch.testing.assert_close(again.push(latents), whole, rtol=1e-5, atol=1e-5)


def test_encode_shapes_and_frame_rule(codec):
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (1, 16, 3, 4, 4)
    assert codec.decode(latents).shape == (1, 3, 9, 32, 32)
    with pytest.raises(ValueError, match="4k\\+1"):
        codec.encode(torch.zeros(1, 3, 8, 32, 32))
    assert latent_frames_for(33) == 9 and latent_frames_for(81) == 21


def test_raw_and_normalised_spaces_round_trip_with_wan_statistics():
    latents = torch.randn(1, 16, 2, 3, 3)
    raw = to_raw(latents)
    assert torch.allclose(raw[0, :, 0, 0, 0], latents[0, :, 0, 0, 0] * torch.tensor(WAN21_LATENTS_STD)
                          + torch.tensor(WAN21_LATENTS_MEAN))
    torch.testing.assert_close(from_raw(raw), latents)
    assert len(WAN21_LATENTS_MEAN) == 16 and WAN21_LATENTS_MEAN[0] == pytest.approx(-0.7571)


def test_codec_save_load_round_trip(codec, tmp_path):
    path = tmp_path / "vae.safetensors"
    codec.save(path)
    loaded = LatentCodec.load(path)
    latents = torch.randn(1, 16, 2, 4, 4)
    torch.testing.assert_close(loaded.decode(latents), codec.decode(latents))
    with pytest.raises(ValueError, match="not a VAE file"):
        import safetensors.torch

        safetensors.torch.save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
        LatentCodec.load(tmp_path / "other.safetensors")


def test_pixel_layout_helpers():
    frames = torch.randint(0, 256, (5, 8, 8, 3), dtype=torch.uint8)
    pixels = video_to_pixels(frames)
    assert pixels.shape == (1, 3, 5, 8, 8) and pixels.min() >= -1 and pixels.max() <= 1
    torch.testing.assert_close(pixels_to_video(pixels)[0] * 255, frames.float(), atol=1e-3, rtol=0)


def test_toy_text_encoder_zeroes_padding_and_distinguishes_prompts(tmp_path):
    torch.manual_seed(0)
    encoder = ToyTextEncoder(ToyTextConfig(width=32)).eval()
    with torch.no_grad():
        out = encoder.encode(["a red circle", "a blue square and a green triangle", ""])
    assert out.shape == (3, 16, 32)
    assert out[0, 3:].abs().sum() == 0 and out[0, :3].abs().sum() > 0  # 3 tokens, the rest padding
    assert out[2].abs().sum() == 0  # empty prompt = unconditional
    assert not torch.allclose(out[0, :3], encoder.encode(["a blue circle"])[0, :3])
    assert tokenize("A red circle, a blue square") == ["a", "red", "circle", ",", "a", "blue", "square"]
    ids, mask = encoder.token_ids(["a purple circle"])
    assert ids[0, 1] == encoder.index["<unk>"] and mask[0].sum() == 3
    with pytest.raises(ValueError, match="at most 16"):
        encoder.encode([" ".join(["red"] * 17)])

    path = tmp_path / "text.safetensors"
    encoder.save(path)
    torch.testing.assert_close(ToyTextEncoder.load(path).encode(["a red circle"]), encoder.encode(["a red circle"]))


def test_conditioning_from_comfy():
    tensor = torch.randn(1, 512, 4096)
    assert conditioning_from_comfy([[tensor, {"pooled_output": None}]]) is tensor
    with pytest.raises(ValueError, match="CONDITIONING"):
        conditioning_from_comfy(None)
    with pytest.raises(ValueError, match="\\(B, tokens, dim\\)"):
        conditioning_from_comfy([[torch.randn(512, 4096), {}]])
