"""`asd-generate` end to end on the built-in default (and its untrained stand-in when no weights are there)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asd_core.checkpoint import save_checkpoint
from asd_core.cli.generate import main
from asd_core.config import tiny_config
from asd_core.model import CausalWanTransformer
from asd_core.toy.defaults import TOY, load_default_pipeline, toy_model_config
from asd_core.video_io import read_video


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny convolutions here gain nothing from threads, and on a shared 2-core machine OpenMP
    spin-waiting makes them ~10x slower; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_generates_a_video_and_prints_one_summary_line(tmp_path, capsys):
    out = tmp_path / "sub" / "clip.gif"  # parent folder does not exist yet
    assert main(["--out", str(out), "--plan", "1*", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"wrote {out}: 33 frames 64x64, plan 1* (first chunk 4 steps, later 1), ")
    assert lines[0].endswith("[built-in default student, trained plan 1*]")  # the shipped ASD student
    assert "call" in captured.err  # the tqdm bar goes to stderr, never into the summary
    assert read_video(out).shape == (33, 64, 64, 3)
    assert [p.name for p in out.parent.iterdir()] == ["clip.gif"]  # no temp file left


def test_mp4_same_seed_same_video_steps_flag_and_sizes(tmp_path, capsys):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    small = ["--frames", "9", "--width", "32", "--height", "16"]
    assert main(["--out", str(a), "--steps", "2", "--seed", "5", *small]) == 0
    assert main(["--out", str(b), "--plan", "2", "--seed", "5", *small]) == 0
    assert main(["--out", str(c), "--plan", "2", "--seed", "6", *small]) == 0
    video = read_video(a)
    assert video.shape == (9, 16, 32, 3)
    assert (video == read_video(b)).all()
    assert not (video == read_video(c)).all()
    out = capsys.readouterr().out
    assert "9 frames 32x16, plan 2 (2 steps per chunk)" in out


def test_plan_defaults_to_the_checkpoints_trained_plan(tmp_path, capsys):
    model = load_default_pipeline().model
    path = save_checkpoint(tmp_path / "toy.safetensors", model.state_dict(), model.config, plan="2")
    out = tmp_path / "x.gif"
    assert main(["--checkpoint", str(path), "--out", str(out), "--frames", "9", "--width", "16", "--height", "16"]) == 0
    line = capsys.readouterr().out.strip()
    assert "plan 2 (2 steps per chunk)" in line and "toy.safetensors" in line


def test_guidance_defaults_to_what_the_checkpoint_records(tmp_path, capsys):
    """A teacher records the CFG it samples best at (asd.cfg); students record none and sample unguided."""
    model = load_default_pipeline().model
    path = save_checkpoint(tmp_path / "guided.safetensors", model.state_dict(), model.config, plan="2",
                           extra={"asd.cfg": "2.5"})
    small = ["--checkpoint", str(path), "--frames", "9", "--width", "16", "--height", "16", "--seed", "1"]
    recorded, explicit, unguided = tmp_path / "r.mp4", tmp_path / "e.mp4", tmp_path / "u.mp4"
    assert main([*small, "--out", str(recorded)]) == 0
    assert "plan 2 (2 steps per chunk), cfg 2.5, " in capsys.readouterr().out
    assert main([*small, "--out", str(explicit), "--cfg-scale", "2.5"]) == 0
    assert main([*small, "--out", str(unguided), "--cfg-scale", "1"]) == 0
    assert ", cfg " not in capsys.readouterr().out.splitlines()[-1]  # 1 = no guidance, not shown
    assert (read_video(recorded) == read_video(explicit)).all()
    assert not (read_video(recorded) == read_video(unguided)).all()
    assert main(["--out", str(tmp_path / "s.gif"), "--frames", "9"]) == 0  # the shipped student: none recorded
    assert ", cfg " not in capsys.readouterr().out


def test_checkpoint_with_other_text_width_is_a_clear_error(tmp_path, capsys):
    torch.manual_seed(0)
    config = tiny_config(chunk_frames=3)  # text_dim 32: not the toy encoder's 64 (as real Wan's 4096 is not)
    path = save_checkpoint(tmp_path / "other.safetensors", CausalWanTransformer(config).state_dict(), config)
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "32-dim text embeddings" in err and "64" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "18"], "4k+1 frames, e.g. 17 or 21; with chunks of 3 latent frames use --frames 9 or 21"),
        (["--frames", "17"], "5 latent frames, which do not split into chunks of 3; use --frames 9 or 21"),
        (["--plan", "turbo"], "turbo"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--cfg-scale", "-2"], "--cfg-scale must be a finite number >= 0"),
        (["--width", "40"], "multiples of 16"),
        (["--out", "clip.avi"], "accepted extensions"),
        (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "nonsense"], "--device"),
    ],
)
def test_bad_input_is_one_line_on_stderr_exit_2(tmp_path, capsys, args, message):
    argv = ["--out", str(tmp_path / "x.gif")] + args if "--out" not in args else args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asd-generate: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_plan_and_steps_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--plan", "1*", "--steps", "2"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_sampler_flag_picks_the_algorithm_by_name(tmp_path, capsys):
    small = ["--frames", "21", "--width", "16", "--height", "16", "--plan", "2", "--seed", "4"]
    chunk_loop, rolling = tmp_path / "loop.gif", tmp_path / "rolling.gif"
    assert main(["--out", str(chunk_loop), *small]) == 0
    assert main(["--out", str(rolling), "--sampler", "rolling_forcing", *small]) == 0
    loop_line, rolling_line = capsys.readouterr().out.strip().splitlines()
    assert ", sampler " not in loop_line  # auto: the built-in default's family samples with Self Forcing's loop
    assert "plan 2 (2 steps per chunk), sampler rolling_forcing, " in rolling_line
    assert not np.array_equal(read_video(chunk_loop), read_video(rolling))  # a window of chunks per pass
    with pytest.raises(SystemExit) as exit_info:
        main(["--sampler", "ema", "--out", str(tmp_path / "x.gif")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'ema'" in capsys.readouterr().err


def test_written_video_has_real_pixels(tmp_path):
    """The decoded video is written as real pixels: not one flat colour, values span a range."""
    out = tmp_path / "v.webp"
    assert main(["--out", str(out), "--frames", "9", "--width", "16", "--height", "16"]) == 0
    video = read_video(out)
    assert video.dtype == np.uint8 and video.shape == (9, 16, 16, 3) and video.std() > 0


def test_default_pipeline_untrained_stand_in(tmp_path, monkeypatch):
    from asd_core.toy import defaults

    sizes = defaults.TOY
    assert (sizes.pixel_frames - 1) // 4 + 1 == sizes.latent_frames == 9 and sizes.num_chunks == 3
    assert (sizes.height // 8, sizes.width // 8) == (sizes.latent_height, sizes.latent_width) == (8, 8)
    config = toy_model_config()
    assert (config.num_layers, config.width, config.ffn_dim, config.text_dim, config.chunk_frames) == (4, 128, 256, 64, 3)

    monkeypatch.setattr(defaults, "WEIGHTS_DIR", tmp_path)  # nothing shipped there
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = defaults.load_default_pipeline()
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is untouched
    second = defaults.load_default_pipeline()
    assert not first.trained and first.label.startswith("UNTRAINED")
    for a, b in [(first.model, second.model), (first.text_encoder, second.text_encoder), (first.codec.vae, second.codec.vae)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # fixed seed
    assert first.text_encoder.encode(["a red circle"]).shape[-1] == config.text_dim
    assert first.codec.latent_channels == config.in_channels
    with pytest.raises(FileNotFoundError, match="student.safetensors"):
        defaults.load_default_pipeline(allow_untrained=False)


def test_chunks_are_decoded_as_they_finish_and_the_bar_ticks_per_model_call(tmp_path, monkeypatch, capsys):
    import asd_core.samplers as sampler_module
    import asd_core.vae as vae_module

    events = []  # generate() samples through asd_core.samplers and imports the VAE lazily: spy on them
    real_push, real_sampler = vae_module.StreamingDecoder.push, sampler_module.sample_video

    def push(self, chunk):
        events.append(("push", chunk.shape[2]))
        return real_push(self, chunk)

    def sampler(model, **kwargs):
        outer = kwargs["callback"]
        kwargs["callback"] = lambda p: events.append(("call" if p.finished_chunk is None else "done", p.chunk)) or outer(p)
        return real_sampler(model, **kwargs)

    monkeypatch.setattr(vae_module.StreamingDecoder, "push", push)
    monkeypatch.setattr(sampler_module, "sample_video", sampler)
    assert main(["--out", str(tmp_path / "x.gif"), "--plan", "1*"]) == 0
    # 1*: chunk 0 = 4 steps + cache fill, chunk 1 = 1 step + fill, chunk 2 = 1 step; each chunk decoded
    # right after its last step, before its own cache fill (one model pass sooner)
    assert events == [("call", 0)] * 4 + [("done", 0), ("push", 3), ("call", 0), ("call", 1), ("done", 1), ("push", 3),
                                          ("call", 1), ("call", 2), ("done", 2), ("push", 3)]
    assert "0/8 " in capsys.readouterr().err  # the bar opens with the sampler's model-call count as total


def test_real_wan_inputs_are_checked_before_loading(tmp_path, capsys):
    from asd_core.config import wan21_t2v_1_3b
    from asd_core.request import check_request

    assert check_request(wan21_t2v_1_3b(), frames=81, width=832, height=480).latent_frames == 21
    assert check_request(toy_model_config(), frames=33, width=64, height=64).latent_frames == 9
    cases = [
        (["--text-encoder", str(tmp_path)], "needs --vae"),
        (["--vae", str(tmp_path / "Wan2.1_VAE.pth")], "Wan2.1_VAE.pth"),
        (["--context-noise", "2000"], "context_noise"),
    ]
    for args, message in cases:
        assert main(["--out", str(tmp_path / "x.gif"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("asd-generate: error:") and message in err and len(err.splitlines()) == 1


def test_wan_sized_checkpoint_points_to_the_umt5_and_vae_flags(tmp_path, capsys):
    torch.manual_seed(0)
    config = tiny_config(text_dim=4096, chunk_frames=3)
    path = save_checkpoint(tmp_path / "wanlike.safetensors", CausalWanTransformer(config).state_dict(), config)
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert "4096-dim text embeddings" in err and "--text-encoder" in err and "--vae" in err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_real_wan_branch_end_to_end_with_tiny_umt5_and_vae(tmp_path, capsys, dtype):
    """--checkpoint + --text-encoder + --vae, the real-Wan path, on tiny random stand-ins; the float32
    umt5 output feeds a transformer in every --dtype (the crash GPU users hit with bf16)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from asd_core.vae import LatentCodec

    torch.manual_seed(0)
    config = tiny_config(text_dim=32, chunk_frames=3)
    checkpoint = save_checkpoint(tmp_path / "causal.safetensors", CausalWanTransformer(config).state_dict(), config,
                                 plan="2*")
    repo = tmp_path / "Wan2.1-T2V-tiny-Diffusers"  # the Wan diffusers layout: text_encoder/, tokenizer/, vae/
    umt5 = UMT5EncoderModel(UMT5Config(vocab_size=16, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                                       relative_attention_num_buckets=8, feed_forward_proj="gated-gelu"))
    umt5.save_pretrained(repo / "text_encoder")
    words = ["<pad>", "</s>", "<unk>", "a", "cat"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(repo / "tokenizer")
    LatentCodec.tiny_random(seed=1).vae.save_pretrained(repo / "vae")

    out = tmp_path / "wan.webp"
    argv = ["--checkpoint", str(checkpoint), "--text-encoder", str(repo), "--vae", str(repo), "--prompt", "a cat",
            "--frames", "9", "--width", "32", "--height", "16", "--dtype", dtype, "--out", str(out)]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: 9 frames 32x16, plan 2* (first chunk 4 steps, later 2), ")
    assert line.endswith("[causal.safetensors]")  # no toy pieces involved, no UNTRAINED note
    assert read_video(out).shape == (9, 16, 32, 3)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fails the test if anything loads a model: these requests must be refused before that."""
    import asd_core.checkpoint
    import asd_core.toy.defaults

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a request that should have been refused first")

    monkeypatch.setattr(asd_core.checkpoint, "load_model", refuse)
    monkeypatch.setattr(asd_core.toy.defaults, "load_default_pipeline", refuse)


def _student_tensors() -> dict:
    import safetensors.torch

    from asd_core.toy.defaults import default_file

    return safetensors.torch.load_file(default_file("student"))


def _crafted(tmp_path, name, **changes):
    """The shipped student's tensors under edited metadata (issue 25 item 5)."""
    import json

    import safetensors.torch

    from asd_core.checkpoint import FORMAT
    from asd_core.checkpoint_io import read_safetensors
    from asd_core.toy.defaults import default_file

    state, metadata = read_safetensors(default_file("student"))
    config = json.loads(metadata["asd.config"])  # the shipped student's own
    config.update(changes)
    path = tmp_path / name
    safetensors.torch.save_file(state, path, metadata={"asd.format": FORMAT, "asd.config": json.dumps(config)})
    return path


@pytest.mark.parametrize("args, message", [
    # issue 25 item 4: each of these used to fail only after loading, or after the whole generation
    (["--width", "100000", "--height", "100000"], "--width 100000 is larger than this model can place: RoPE has 256 "
                                                  "positions of 16 per axis (rope_max_seq_len), so use --width 4096 or less"),
    (["--frames", "1053"], "--frames 1053: 264 latent frames exceed the 256 frame positions this model has "
                           "(rope_max_seq_len; a rolling window does not extend them); use --frames 1017 or fewer"),
    (["--fps", "0"], "--fps must be a number in (0, 1000], got 0.0"),
    (["--fps", "nan"], "--fps must be a number in (0, 1000]"),
    (["--context-noise", "nan"], "--context-noise: context_noise is a timestep in [0, 1000], got nan"),
    # issue 25 item 6
    (["--plan", ""], "--plan: empty step plan; accepted:"),
    (["--plan", "4;shift=inf"], "shift in '4;shift=inf' must be a finite number in [0.001, 1000]"),
    (["--plan", "4;shift=1e-300"], "shift in '4;shift=1e-300' must be a finite number in [0.001, 1000]"),
    (["--cfg-scale", "inf"], "--cfg-scale must be a finite number >= 0"),
    # issue 25 item 7
    (["--seed", str(10**23)], f"--seed must be an integer in [0, 2^64 - 1], got {10**23}"),
    (["--checkpoint", "."], "is a directory, not a checkpoint file"),
])
def test_bad_requests_are_refused_before_any_model_is_loaded(tmp_path, capsys, no_model_loads, args, message):
    assert main(["--out", str(tmp_path / "x.gif"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asd-generate: error:") and message in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "x.gif").exists()


def test_unwritable_out_is_refused_before_any_model_is_loaded(tmp_path, capsys, no_model_loads):
    (tmp_path / "file").write_text("")
    cases = [(tmp_path / "file" / "x.gif", "is a file, not a folder"),
             (tmp_path, "accepted extensions"),
             (tmp_path / "dir.gif", "is a directory")]
    (tmp_path / "dir.gif").mkdir()
    if Path("/proc/self").exists():  # a file system nobody can create files in, even root
        cases.append((Path("/proc/asd/x.gif"), "cannot write in /proc"))
    for out, message in cases:
        assert main(["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_memory_is_estimated_against_the_device_before_loading(tmp_path, capsys, no_model_loads, monkeypatch):
    import asd_core.request

    monkeypatch.setattr(asd_core.request, "device_memory", lambda device: 10**9)  # 1 GB free
    assert main(["--out", str(tmp_path / "x.gif"), "--frames", "81", "--width", "1024", "--height", "1024"]) == 2
    err = capsys.readouterr().err.strip()
    assert "81 frames of 1024x1024 need about " in err and "but cpu has 1.0 GB available: use --frames " in err
    assert "or fewer, or a smaller --width/--height" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("changes, message", [
    (dict(num_layers=10000000), "num_layers must be a whole number in [1, 1000], got 10000000"),
    (dict(num_layers=40), "the model config says num_layers 40 but the file holds 6 transformer blocks"),
    (dict(num_attention_heads="2"), "num_attention_heads must be a whole number in [1, 1024], got '2' (str)"),
    (dict(num_attention_heads=-2), "num_attention_heads must be a whole number in [1, 1024], got -2"),
    (dict(ffn_dim=1024), "mis-shaped: blocks.0.ffn.net.0.proj.weight file (512, 256) vs model (1024, 256)"),
])
def test_crafted_metadata_is_refused_quickly(tmp_path, capsys, no_model_loads, changes, message):
    path = _crafted(tmp_path, "crafted.safetensors", **changes)
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "crafted.safetensors" in err and len(err.splitlines()) == 1, err


def test_truncated_pt_is_reported_as_truncated(tmp_path, capsys, no_model_loads):
    path = tmp_path / "cut.pt"
    torch.save(_student_tensors(), path)
    path.write_bytes(path.read_bytes()[:5000])
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cut.pt is truncated or corrupt" in err and "pickled" not in err, err


def test_non_finite_output_is_refused_and_nothing_is_written(tmp_path, capsys):
    """NaN weights and guidance that overflows used to write a garbage video with exit 0."""
    model = load_default_pipeline().model
    state = model.state_dict()
    state["proj_out.weight"] = torch.full_like(state["proj_out.weight"], float("nan"))
    path = save_checkpoint(tmp_path / "nan.safetensors", state, model.config)
    small = ["--frames", "9", "--width", "16", "--height", "16"]
    for args in (["--checkpoint", str(path)], ["--cfg-scale", "1e38"]):
        out = tmp_path / "x.gif"
        assert main(["--out", str(out), *small, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's \r-rewritten line
        assert err.startswith("asd-generate: error: the model produced NaN or infinite values in chunk 1 of 1, "
                              "nothing was written"), err
        assert not out.exists() and ("--cfg-scale 1e+38 may be too large" in err) == ("1e38" in args)


def test_a_huge_prompt_error_is_short(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x.gif"), "--prompt", "a " * 50000]) == 2
    err = capsys.readouterr().err.strip()
    assert "prompt has 50000 tokens" in err and "(100000 characters)" in err and len(err) < 400, err[:500]


def test_unknown_prompt_words_get_one_warning_line_and_help_lists_the_vocabulary(tmp_path, capsys):
    assert main(["--prompt", "a purple hexagon and a red circle", "--plan", "1", "--frames", "9",
                 "--out", str(tmp_path / "x.gif")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "does not know 'purple', 'hexagon'; it knows: a and red green" in warnings[0]
    assert main(["--prompt", "a red circle", "--plan", "1", "--frames", "9", "--out", str(tmp_path / "y.gif")]) == 0
    assert "warning" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "the built-in default knows the words: a and red" in " ".join(capsys.readouterr().out.split())


def test_a_toy_checkpoint_samples_with_the_text_encoder_exported_beside_it(tmp_path, capsys):
    """A re-trained teacher's export writes its jointly trained encoder beside it; sampling it with
    the built-in encoder instead maps the prompt's words to the wrong embeddings, silently."""
    from asd_core.pipeline import Pipeline
    from asd_core.toy.defaults import default_file
    from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder

    shipped = load_default_pipeline(which="teacher")
    run = tmp_path / "export"
    run.mkdir()
    chunked = replace(shipped.model.config, chunk_frames=TOY.chunk_frames)  # causal, so 9 frames make whole chunks
    checkpoint = save_checkpoint(run / "teacher.safetensors", shipped.model.state_dict(), chunked)
    torch.manual_seed(5)
    own = ToyTextEncoder(ToyTextConfig(width=shipped.text_encoder.width))  # weights unlike the shipped encoder's
    own.save(run / "text_encoder.safetensors")

    pipeline = Pipeline.load(checkpoint)
    assert "its text encoder beside it, built-in toy VAE" in pipeline.label
    assert torch.equal(pipeline.text_encoder.encode("a red circle"), own.encode("a red circle"))

    small = ["--frames", "9", "--plan", "4", "--seed", "1", "--prompt", "a red circle"]
    videos = {}
    for name, args in (("beside", []), ("flag", ["--text-encoder", str(run / "text_encoder.safetensors")]),
                       ("builtin", ["--text-encoder", str(default_file("text_encoder"))])):
        out = tmp_path / f"{name}.gif"
        assert main(["--checkpoint", str(checkpoint), "--out", str(out), *small, *args]) == 0  # a toy file needs no --vae
        videos[name] = read_video(out)
    assert "its text encoder beside it" in capsys.readouterr().out
    assert videos["beside"].shape == (9, 64, 64, 3)  # toy sizes: the toy encoder file is not a umt5 folder
    assert np.array_equal(videos["beside"], videos["flag"])
    assert not np.array_equal(videos["beside"], videos["builtin"])
