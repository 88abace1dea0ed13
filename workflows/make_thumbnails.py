"""Template-browser thumbnails: `python workflows/make_thumbnails.py [NAME.json ...] [NAME.json=IMAGE ...]`.

ComfyUI shows `workflows/NAME.jpg` beside `NAME.json`. A thumbnail is what the workflow makes:
the workflow is run (our nodes, through the tests' executor, with the built-in default and
the seed saved in the file) and the decoded frames of each ASD Decode in it are laid out as a
grid of evenly spaced frames, one video per band, enlarged by a whole factor with
nearest-neighbour (every pixel a crisp block) to fill the 4:3 card with no border. Frames
come straight from the decoder, not from a lossy video file. With no names, every workflow
that runs on the built-in default is done. `NAME.json=IMAGE` (a .png/.jpg, e.g. a frontend
screenshot for a workflow that needs weights we cannot ship) is fitted the same way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = (512, 384)  # 4:3, what the template browser's cards crop to
COLUMNS = 4  # frames per band
GUTTER = (96, 96, 104)  # a 1-pixel line between frames, so dark frames do not run together
NEEDS_FILES = {"asd_wan2.1_1.3b_causal.json"}  # real Wan weights: give a picture with NAME.json=IMAGE


def grid(videos: list[np.ndarray]) -> np.ndarray:
    """Evenly spaced frames of each video (T, H, W, 3), COLUMNS per row; bands of rows stacked.

    Each video gets as many rows as keep the whole grid nearest to 4:3, so one square video
    shows 12 frames in 3 rows and three videos one row each.
    """
    height, width = videos[0].shape[1:3]
    rows = max(1, round(COLUMNS * width * SIZE[1] / (SIZE[0] * height * len(videos))))
    bands = []
    for video in videos:
        picks = np.linspace(0, len(video) - 1, rows * COLUMNS).round().astype(int)
        framed = np.empty((rows * COLUMNS, height + 1, width + 1, 3), dtype=np.uint8)
        framed[...] = GUTTER
        framed[:, :height, :width] = video[picks]
        framed = framed.reshape(rows, COLUMNS, height + 1, width + 1, 3)
        bands.append(framed.transpose(0, 2, 1, 3, 4).reshape(rows * (height + 1), COLUMNS * (width + 1), 3))
    return np.concatenate(bands, axis=0)[:-1, :-1]  # no gutter past the last row and column


def fill_card(image: np.ndarray) -> Image.Image:
    """Enlarge by the smallest whole factor that covers SIZE (nearest-neighbour), then crop the centre."""
    height, width = image.shape[:2]
    factor = max(-(-SIZE[0] // width), -(-SIZE[1] // height))
    big = image.repeat(factor, axis=0).repeat(factor, axis=1)
    top, left = (big.shape[0] - SIZE[1]) // 2, (big.shape[1] - SIZE[0]) // 2
    return Image.fromarray(np.ascontiguousarray(big[top : top + SIZE[1], left : left + SIZE[0]]))


def uint8(images) -> np.ndarray:
    """A ComfyUI IMAGE [T, H, W, 3] in 0..1 -> uint8 frames."""
    return (images.clamp(0, 1) * 255).round().byte().numpy()


def load_image_like_comfyui(path: Path):
    """What core LoadImage gives for an RGB file: IMAGE [1, H, W, 3] in 0..1 and an empty MASK."""
    import torch

    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255
    return rgb[None], torch.zeros(1, rgb.shape[0], rgb.shape[1])


def decoded_videos(name: str, maker, executor_module, pack, core) -> list[np.ndarray]:
    """Run one workflow with our nodes; the frames of each ASD Decode, in node order.

    Core loaders are given what they would load: LoadImage the file the workflow names (from
    workflows/), and the continuation workflow's input video is the text-to-video workflow's
    output (a 64x64 clip of the default, as `docs/comfyui.md` prescribes).
    """
    info = {**core, **executor_module.pack_object_info(pack)}
    prompt = executor_module.ui_to_api(maker.TEMPLATES[name].build(info), info)
    given = {}
    for node_id, node in prompt.items():
        if node["class_type"] == "LoadImage":
            given[node_id] = load_image_like_comfyui(HERE / node["inputs"]["image"])
        elif node["class_type"] == "GetVideoComponents":
            (clip,) = decoded_videos("asd_t2v_default_1star.json", maker, executor_module, pack, core)
            import torch

            given[node_id] = (torch.from_numpy(clip).float() / 255, None, 8.0)
    results = executor_module.Executor(pack, core).run(prompt, given=given)
    decodes = sorted((i for i, n in prompt.items() if n["class_type"] == "ASDDecode"), key=int)
    return [uint8(results[i][0]) for i in decodes]


def load_tools():
    """make_workflows (the templates) and the tests' executor with the pack imported as ComfyUI does."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import comfy_executor

    spec = importlib.util.spec_from_file_location("make_workflows", HERE / "make_workflows.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker, comfy_executor, comfy_executor.load_pack(), comfy_executor.core_object_info()


def main(argv: list[str]) -> int:
    maker, executor_module, pack, core = load_tools()
    names = [a for a in argv if "=" not in a] if argv else [n for n in maker.TEMPLATES if n not in NEEDS_FILES]
    pictures = dict(a.split("=", 1) for a in argv if "=" in a)
    for name in [*names, *pictures]:
        if name not in maker.TEMPLATES:
            print(f"no workflow {name}; the workflows are {sorted(maker.TEMPLATES)}", file=sys.stderr)
            return 2
        if name in NEEDS_FILES and name not in pictures:
            print(f"{name} needs weights this script cannot run: give {name}=SCREENSHOT.png", file=sys.stderr)
            return 2
    for name in names:
        card = fill_card(grid(decoded_videos(name, maker, executor_module, pack, core)))
        card.save(HERE / Path(name).with_suffix(".jpg").name, quality=92)
        print(f"wrote workflows/{Path(name).with_suffix('.jpg').name}")
    for name, picture in pictures.items():
        image = Image.open(picture).convert("RGB")
        scale = max(SIZE[0] / image.width, SIZE[1] / image.height)  # a screenshot: resized smoothly to cover
        image = image.resize((max(SIZE[0], round(image.width * scale)), max(SIZE[1], round(image.height * scale))),
                             Image.LANCZOS)
        card = fill_card(np.array(image))
        card.save(HERE / Path(name).with_suffix(".jpg").name, quality=92)
        print(f"wrote workflows/{Path(name).with_suffix('.jpg').name} from {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
