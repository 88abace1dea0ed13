"""Text conditioning and the Wan VAE codec on tiny random configs."""

import itertools

import pytest
import safetensors.torch
import torch

from asd_core.text import UMT5TextEncoder, conditioning_from_comfy, conditioning_to_comfy
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder, tokenize
from asd_core.vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    LatentCodec,
    chunk_pixel_ranges,
    from_raw,
    latent_frames_for,
    load_codec,
    pixels_to_video,
    tiny_vae_config,
    to_raw,
    video_to_pixels,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny convolutions here gain nothing from threads, and on a shared 2-core machine OpenMP
    spin-waiting makes them ~10x slower; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def codec():
    return LatentCodec.tiny_random(seed=3)


def test_streaming_decode_equals_diffusers_decode(codec):
    latents = torch.randn(2, 16, 5, 2, 2, generator=torch.Generator().manual_seed(0))
    whole = codec.decode(latents)  # diffusers' own decode(): clears the cache, all frames at once
    assert whole.shape == (2, 3, 17, 16, 16)
    first, second = codec.decode_stream(), codec.decode_stream()
    # two streams on one codec, interleaved: each keeps its own causal cache
    a = [first.push(latents[:, :, :2]), second.push(latents[:, :, :1])]
    a += [first.push(latents[:, :, 2:3]), second.push(latents[:, :, 1:]), first.push(latents[:, :, 3:])]
    assert [p.shape[2] for p in a] == [5, 1, 4, 16, 8]  # first latent frame -> 1 pixel frame, later -> 4
    torch.testing.assert_close(torch.cat([a[0], a[2], a[4]], dim=2), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([a[1], a[3]], dim=2), whole, rtol=1e-5, atol=1e-5)
    # the streams did not leave state in the VAE: decode() still gives the same video
    torch.testing.assert_close(codec.decode(latents), whole, rtol=0, atol=0)
    with pytest.raises(ValueError, match="\\(B, 16, f, h, w\\)"):
        codec.decode_stream().push(torch.zeros(1, 8, 1, 4, 4))


def test_encode_shapes_and_frame_rule(codec):
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1  # T = 4k+1 with k = 2 -> 3 latent frames
    latents = codec.encode(video)
    assert latents.shape == (1, 16, 3, 4, 4)
    assert codec.decode(latents).shape == (1, 3, 9, 32, 32)
    # the latents are the normalised posterior mode of diffusers' encode()
    raw = codec.vae.encode(video).latent_dist.mode()
    torch.testing.assert_close(latents, (raw - torch.tensor(codec.mean).view(1, -1, 1, 1, 1))
                               / torch.tensor(codec.std).view(1, -1, 1, 1, 1))
    with pytest.raises(ValueError, match="4k\\+1"):
        codec.encode(torch.zeros(1, 3, 8, 32, 32))
    assert latent_frames_for(1) == 1 and latent_frames_for(33) == 9 and latent_frames_for(81) == 21


def test_chunk_pixel_ranges_are_what_the_streaming_decoder_yields_per_chunk():
    """The per-chunk frame ranges asd-eval reports, against the decoder itself chunk by chunk."""
    codec = LatentCodec.tiny_random()
    stream, decoded = codec.decode_stream(), 0
    expected = []
    for chunk in torch.zeros(1, 16, 9, 2, 2).split(3, dim=2):
        frames = stream.push(chunk).shape[2]
        expected.append((decoded, decoded + frames - 1))
        decoded += frames
    assert chunk_pixel_ranges(9, 3) == expected == [(0, 8), (9, 20), (21, 32)]
    assert chunk_pixel_ranges(4, 1) == [(0, 0), (1, 4), (5, 8), (9, 12)]
    with pytest.raises(ValueError, match="do not split"):
        chunk_pixel_ranges(9, 2)


def test_raw_and_normalised_spaces_match_wan_pipeline_convention():
    latents = torch.randn(1, 16, 2, 3, 3)
    raw = to_raw(latents)
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
    recip_std = 1.0 / torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(raw, latents / recip_std + mean)  # WanPipeline, before vae.decode
    torch.testing.assert_close(from_raw(raw), latents)
    torch.testing.assert_close(from_raw(raw), (raw - mean) * recip_std)  # Wan I2V's encode side
    # the Wan 2.1 statistics (diffusers' AutoencoderKLWan defaults; ComfyUI's Wan21 latent format)
    assert len(WAN21_LATENTS_MEAN) == len(WAN21_LATENTS_STD) == 16
    assert WAN21_LATENTS_MEAN[:2] == pytest.approx((-0.7571, -0.7089)) and WAN21_LATENTS_STD[-1] == pytest.approx(1.9160)
    assert WAN21_LATENTS_MEAN[7] == pytest.approx(1.5508) and WAN21_LATENTS_STD[8] == pytest.approx(3.2687)


def test_codec_save_load_and_load_codec_formats(codec, tmp_path):
    latents = torch.randn(1, 16, 2, 4, 4)
    expected = codec.decode(latents)
    path = tmp_path / "vae.safetensors"
    codec.save(path)
    torch.testing.assert_close(LatentCodec.load(path).decode(latents), expected)
    torch.testing.assert_close(load_codec(path).decode(latents), expected)  # our own file, recognised
    codec.vae.save_pretrained(tmp_path / "repo" / "vae")  # a Wan diffusers repo layout
    loaded = load_codec(tmp_path / "repo")
    assert loaded.mean == codec.mean
    torch.testing.assert_close(loaded.decode(latents), expected)

    safetensors.torch.save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a VAE file"):
        LatentCodec.load(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="does not look like a Wan VAE"):
        load_codec(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        load_codec(tmp_path / "missing.safetensors")


def _wan_layout(diffusers_state: dict) -> dict:
    """The original Wan names of a diffusers VAE state dict, found by running diffusers' own converter
    over every name the original layout can have (so this test does not restate the mapping)."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    res = [f"residual.{i}.{p}" for i, p in (("0", "gamma"), ("2", "weight"), ("2", "bias"), ("3", "gamma"),
                                               ("6", "weight"), ("6", "bias"))]
    inner = res + [f"{m}.{p}" for m in ("shortcut", "resample.1", "time_conv") for p in ("weight", "bias")]
    names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    for side in ("encoder", "decoder"):
        names += [f"{side}.conv1.{p}" for p in ("weight", "bias")]
        names += [f"{side}.head.{x}" for x in ("0.gamma", "2.weight", "2.bias")]
        names += [f"{side}.middle.{i}.{r}" for i in (0, 2) for r in res]
        names += [f"{side}.middle.1.{x}" for x in ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight",
                                                    "proj.bias")]
        blocks = "downsamples" if side == "encoder" else "upsamples"
        names += [f"{side}.{blocks}.{i}.{x}" for i, x in itertools.product(range(16), inner)]
    inverse = {}
    for name in names:
        (target,) = convert_wan_vae_to_diffusers({name: None})
        if target in diffusers_state:
            assert target not in inverse, f"two Wan names map to {target}"
            inverse[target] = name
    assert set(inverse) == set(diffusers_state), sorted(set(diffusers_state) - set(inverse))[:5]
    return {inverse[k]: v for k, v in diffusers_state.items()}


def test_load_codec_reads_the_original_wan_layout(tmp_path):
    # diffusers' converter assumes Wan's 2 residual blocks per level; base_dim is free, keep it small
    config = tiny_vae_config(base_dim=8, num_res_blocks=2)
    source = LatentCodec.tiny_random(seed=5, base_dim=8, num_res_blocks=2)
    wan_state = _wan_layout(source.vae.state_dict())
    assert "decoder.upsamples.4.shortcut.weight" in wan_state and "encoder.conv1.weight" in wan_state
    path = tmp_path / "wan_2.1_vae.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in wan_state.items()}, path)
    loaded = load_codec(path, config=config)
    latents = torch.randn(1, 16, 2, 2, 2)
    torch.testing.assert_close(loaded.decode(latents), source.decode(latents), rtol=0, atol=0)
    torch.save({"state_dict": wan_state}, tmp_path / "Wan2.1_VAE.pth")
    torch.testing.assert_close(load_codec(tmp_path / "Wan2.1_VAE.pth", config=config).decode(latents),
                               source.decode(latents), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit a Wan 2.1 AutoencoderKLWan"):
        load_codec(path)  # a tiny file is not the real Wan 2.1 architecture: clear error, not a crash


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
    # padding does not leak into real tokens: a prompt alone equals the same prompt in a batch
    torch.testing.assert_close(encoder.encode(["a red circle"])[0], out[0])
    assert tokenize("A red circle, a blue square") == ["a", "red", "circle", ",", "a", "blue", "square"]
    ids, mask = encoder.token_ids(["a purple circle"])
    assert ids[0, 1] == encoder.index["<unk>"] and mask[0].sum() == 3
    with pytest.raises(ValueError, match="at most 16"):
        encoder.encode([" ".join(["red"] * 17)])

    path = tmp_path / "text.safetensors"
    encoder.save(path)
    loaded = ToyTextEncoder.load(path)
    assert loaded.config == encoder.config
    torch.testing.assert_close(loaded.encode(["a red circle"]), encoder.encode(["a red circle"]))


def _tiny_umt5(seed=0):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    return UMT5EncoderModel(config).eval()


def test_umt5_encoder_matches_wan_pipeline_recipe():
    model = _tiny_umt5()
    encoder = UMT5TextEncoder(model, max_length=12)
    ids = torch.tensor([[5, 9, 7, 1, 0, 0], [4, 1, 0, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[4], [2]])).long()
    out = encoder.encode_ids(ids, mask)
    assert out.shape == (2, 12, 32)
    # diffusers' WanPipeline: encode the padded batch, keep the first seq_len rows, zeros after
    padded_ids = torch.nn.functional.pad(ids, (0, 6))
    padded_mask = torch.nn.functional.pad(mask, (0, 6))
    with torch.no_grad():
        hidden = model(input_ids=padded_ids, attention_mask=padded_mask).last_hidden_state
    for row, length in enumerate((4, 2)):
        torch.testing.assert_close(out[row, :length], hidden[row, :length])
        assert out[row, length:].abs().sum() == 0 and hidden[row, length:].abs().sum() > 0
    with pytest.raises(ValueError, match="at most 12"):
        encoder.encode_ids(torch.ones(1, 13, dtype=torch.long), torch.ones(1, 13))
    with pytest.raises(ValueError, match="no tokenizer"):
        encoder.encode(["a red circle"])


def test_umt5_from_pretrained_local_wan_layout(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "red", "circle", "and", "blue", "square"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(tmp_path / "wan" / "tokenizer")
    model = _tiny_umt5(seed=1)
    model.save_pretrained(tmp_path / "wan" / "text_encoder")

    encoder = UMT5TextEncoder.from_pretrained(tmp_path / "wan", dtype=torch.float32, max_length=8)
    out = encoder.encode(["a  red circle &amp; a  blue square"])  # cleaned: entities unescaped, spaces collapsed
    assert out.shape == (1, 8, 32) and encoder.width == 32
    expected_ids = torch.tensor([[3, 4, 5, 2, 3, 7, 8]])  # "&" is not in the vocabulary -> <unk>
    torch.testing.assert_close(out, encoder.encode_ids(expected_ids, torch.ones_like(expected_ids)))
    assert out[0, 7].abs().sum() == 0 and out[0, 6].abs().sum() > 0
    with pytest.raises(FileNotFoundError):
        UMT5TextEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="single file"):
        UMT5TextEncoder.from_pretrained(tmp_path / "wan" / "text_encoder" / "config.json")


def test_conditioning_from_comfy():
    tensor = torch.randn(1, 512, 4096)
    assert conditioning_from_comfy([[tensor, {"pooled_output": None}]]) is tensor
    assert conditioning_from_comfy(conditioning_to_comfy(tensor)) is tensor
    with pytest.raises(ValueError, match="CONDITIONING"):
        conditioning_from_comfy(None)
    with pytest.raises(ValueError, match="CONDITIONING"):
        conditioning_from_comfy([])
    with pytest.raises(ValueError, match="\\(B, tokens, dim\\)"):
        conditioning_from_comfy([[torch.randn(512, 4096), {}]])




def test_toy_encoder_error_for_a_huge_prompt_is_short():
    """The nodes show the encoder's message as it is: a 100k-character prompt must not fill the UI."""

    encoder = ToyTextEncoder(ToyTextConfig(width=32, max_length=16))
    with pytest.raises(ValueError) as caught:
        encoder.token_ids(["a " * 50000])
    message = str(caught.value)
    assert "prompt has 50000 tokens" in message and "(100000 characters)" in message and len(message) < 200
