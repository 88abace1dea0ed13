"""Template-browser thumbnails: `python workflows/make_thumbnails.py NAME.json=VIDEO[,VIDEO...] ...`.

ComfyUI shows `workflows/NAME.jpg` beside `NAME.json`. Each thumbnail is a strip of frames
of the video that workflow produced when it was run in a real ComfyUI (its SaveVideo output),
so what a user sees before loading a workflow is what it makes. A `.png`/`.jpg` instead of a
video (e.g. a frontend screenshot for a workflow that needs weights we cannot ship) is
resized as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = (512, 384)  # 4:3, what the template browser's cards crop to
FRAMES_SHOWN = 4


def strip(videos: list[np.ndarray]) -> Image.Image:
    """Per video a row of FRAMES_SHOWN evenly spaced frames, rows stacked, fitted into SIZE on a dark card."""
    rows = []
    for video in videos:
        picks = np.linspace(0, len(video) - 1, FRAMES_SHOWN).round().astype(int)
        rows.append(np.concatenate([video[i] for i in picks], axis=1))
    image = Image.fromarray(np.concatenate(rows, axis=0))
    scale = min(SIZE[0] / image.width, SIZE[1] / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    card = Image.new("RGB", SIZE, (24, 24, 28))
    card.paste(image, ((SIZE[0] - image.width) // 2, (SIZE[1] - image.height) // 2))
    return card


def thumbnail(sources: list[Path]) -> Image.Image:
    if sources[0].suffix.lower() in (".png", ".jpg", ".jpeg"):
        image = Image.open(sources[0]).convert("RGB")
        image.thumbnail(SIZE)
        return image
    from asd_core.video_io import read_video

    return strip([read_video(source) for source in sources])


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    for pair in argv:
        name, source = pair.split("=", 1)
        target = HERE / Path(name).with_suffix(".jpg").name
        if not (HERE / Path(name).with_suffix(".json").name).is_file():
            print(f"no workflow {name} in {HERE}", file=sys.stderr)
            return 2
        thumbnail([Path(p) for p in source.split(",")]).save(target, quality=88)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
