"""The README's first command shows what the project does: its video must show what it asks for.

A newcomer's first video is the README's `asd-generate` line on the built-in default. The test
runs that line's prompt and plan (the output written to a temporary folder, same format) and
scores the video against its own prompt with the evaluator's semantic score (colour, kind and
count of each named shape, per frame).
"""

import re
import shlex
from pathlib import Path

import pytest

from asd_core.cli.generate import main as generate_main
from asd_core.toy.scores import score_videos
from asd_core.video_io import read_video

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def first_generate_command() -> list[str]:
    """The words after `asd-generate` in the README's first command block that runs it."""
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "asd-generate":
                    return words[1:]
    raise AssertionError("the README has no asd-generate command in a bash block")


def test_the_readme_video_shows_the_named_shapes_in_the_named_colours(tmp_path, capsys):
    words = first_generate_command()
    out_index = words.index("--out") + 1
    out = tmp_path / Path(words[out_index]).name
    words[out_index] = str(out)
    assert generate_main(words) == 0, capsys.readouterr().err
    prompt = words[words.index("--prompt") + 1]
    scores = score_videos(read_video(out)[None], [prompt])
    semantic = {key: float(scores[key][0]) for key in ("semantic", "colour", "object_class", "multiple_objects")}
    assert semantic["semantic"] >= 0.8, (prompt, semantic)
