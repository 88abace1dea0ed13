"""`asd-generate` end to end on the built-in default (untrained stand-in until it ships)."""

import pytest

from asd_core.cli.generate import main
from asd_core.video_io import read_video


def test_generates_a_video_and_prints_one_summary_line(tmp_path, capsys):
    out = tmp_path / "sub" / "clip.gif"
    assert main(["--out", str(out), "--plan", "1*", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out}: 33 frames 64x64, plan 1*")
    assert read_video(out).shape == (33, 64, 64, 3)


def test_same_seed_same_video_and_steps_flag(tmp_path, capsys):
    a, b = tmp_path / "a.webp", tmp_path / "b.webp"
    assert main(["--out", str(a), "--steps", "2", "--seed", "5"]) == 0
    assert main(["--out", str(b), "--plan", "2", "--seed", "5"]) == 0
    assert (read_video(a) == read_video(b)).all()
    assert "plan 2:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "18"], "4k+1 frames, e.g. 17 or 21"),
        (["--frames", "17"], "5 latent frames, which do not split into chunks of 3; use --frames 9 or 21"),
        (["--plan", "turbo"], "unknown step plan"),
        (["--width", "40"], "multiples of 16"),
        (["--out", "clip.avi"], "accepted extensions"),
        (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
    ],
)
def test_bad_input_is_one_line_on_stderr_exit_2(tmp_path, capsys, args, message):
    argv = ["--out", str(tmp_path / "x.gif")] + args if "--out" not in args else args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asd-generate: error:") and message in err and "Traceback" not in err
