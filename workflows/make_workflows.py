"""Writes the sample workflows (ComfyUI UI format) from the nodes' own schemas.

Widget values are laid out in each node's input order, as the frontend saves them, so
the files stay in step with the nodes: run `python workflows/make_workflows.py` after
changing a node's inputs. ComfyUI core nodes are laid out from the schema a real ComfyUI
served (`../shared/comfyui/object_info.json`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import comfy_executor  # noqa: E402

# Prompts the built-in student follows at plan 1* (one step after a 4-step first chunk): it
# draws circles reliably and squares as rounded blobs (the scores: workflows/README.md).
PROMPT = "a red circle"
DEFAULT_FRAMES = 33  # 9 latent frames = 3 chunks of 3: the length the built-in default was trained on
SEED = 42
FPS = 8.0  # the built-in default's frame rate
WAN_FPS = 16.0  # Wan 2.1's frame rate
# Seeds change after every Run (the frontend's control_after_generate), so Run makes a new
# video each time instead of returning the cached one; the compare workflow shares one.
SEED_CONTROL = "randomize"
# Comfy-Org's repackaged Wan 2.1 text encoder and VAE, as ComfyUI's own Wan templates link them.
WAN_REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
UMT5 = {"name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "url": f"{WAN_REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors?download=true",
        "directory": "text_encoders"}
WAN_VAE = {"name": "wan_2.1_vae.safetensors",
           "url": f"{WAN_REPACKAGED}/vae/wan_2.1_vae.safetensors?download=true",
           "directory": "vae"}
WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


class Graph:
    """A litegraph (UI-format) workflow built node by node."""

    def __init__(self, object_info: dict):
        self.info = object_info
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.column = 0

    def add(self, kind: str, widgets: dict | None = None, *, title: str | None = None, column: int | None = None,
            row: int = 0, size: tuple[int, int] = (320, 180), models: list[dict] | None = None) -> dict:
        """A node with its widgets in input order; `models` are the files it needs, with download links."""
        schema = self.info[kind]
        widgets = dict(widgets or {})
        values, inputs = [], []
        for section in ("required", "optional"):
            for name in schema["input_order"].get(section, []):
                spec = schema["input"][section][name]
                kind_of = comfy_executor.spec_type_and_options(spec)[0]
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if kind_of in WIDGET_KINDS and not options.get("forceInput"):
                    if name in widgets:
                        value = widgets.pop(name)
                    elif "default" in options:
                        value = options["default"]
                    else:
                        raise ValueError(f"{kind}.{name} has no default: give a value")
                    values.append(value)
                    if name in ("seed", "noise_seed") or options.get("control_after_generate"):
                        values.append(SEED_CONTROL)  # the frontend's control_after_generate companion slot
                else:
                    inputs.append({"name": name, "type": kind_of, "link": None})
        if widgets:
            raise ValueError(f"{kind} has no widgets {sorted(widgets)}")
        node_id = len(self.nodes) + 1
        column = self.column if column is None else column
        node = {
            "id": node_id,
            "type": kind,
            "pos": [40 + 380 * column, 40 + 260 * row],
            "size": list(size),
            "flags": {},
            "order": node_id - 1,
            "mode": 0,
            "inputs": inputs,
            "outputs": [
                {"name": name, "type": out, "links": [], "slot_index": slot}
                for slot, (name, out) in enumerate(zip(schema["output_name"], schema["output"]))
            ],
            "properties": {"Node name for S&R": kind},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        if models:
            # The frontend's per-node convention (ComfyUI's own templates): it offers these in its
            # missing-models dialog when the file is not in `directory`.
            node["properties"]["models"] = [dict(m) for m in models]
        self.nodes.append(node)
        return node

    def primitive(self, widget: str, value, *, control: str, title: str, column: int, row: int) -> dict:
        """A frontend Primitive node: one widget value that drives the same-named widget of several nodes.

        A UI-only node (the frontend writes its value into every linked widget when it queues,
        and comfy-cli's converter does the same); `connect_widget` links it to each target.
        """
        node_id = len(self.nodes) + 1
        node = {
            "id": node_id, "type": "PrimitiveNode", "pos": [40 + 380 * column, 40 + 260 * row], "size": [320, 110],
            "flags": {}, "order": node_id - 1, "mode": 0, "inputs": [],
            "outputs": [{"name": "INT", "type": "INT", "links": [], "slot_index": 0, "widget": {"name": widget}}],
            "title": title, "properties": {"Run widget replace on values": False},
            "widgets_values": [value, control],
        }
        self.nodes.append(node)
        return node

    def connect_widget(self, primitive: dict, target: dict, widget: str) -> None:
        """Link a Primitive to a widget of `target`, as the frontend saves a widget turned into an input."""
        value = primitive["widgets_values"][0]
        index = self._widget_index(target, widget)
        if target["widgets_values"][index] != value:
            raise ValueError(f"{target['type']}.{widget} is {target['widgets_values'][index]!r}, the primitive {value!r}: "
                             "give the node the primitive's value (the frontend shows it there)")
        kind = self.info[target["type"]]["input"]
        spec = kind.get("required", {}).get(widget) or kind.get("optional", {})[widget]
        target["inputs"].append({"name": widget, "type": spec[0], "widget": {"name": widget}, "link": None})
        self.connect(primitive, "INT", target, widget)

    def _widget_index(self, node: dict, widget: str) -> int:
        """Position of `widget`'s value in the node's widgets_values (control slots counted)."""
        schema = self.info[node["type"]]
        index = 0
        for section in ("required", "optional"):
            for name in schema["input_order"].get(section, []):
                spec = schema["input"][section][name]
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if comfy_executor.spec_type_and_options(spec)[0] not in WIDGET_KINDS or options.get("forceInput"):
                    continue
                if name == widget:
                    return index
                index += 2 if name in ("seed", "noise_seed") or options.get("control_after_generate") else 1
        raise ValueError(f"{node['type']} has no widget {widget!r}")

    def note(self, text: str, *, column: int, row: int, size: tuple[int, int] = (420, 260)) -> None:
        """A MarkdownNote: shown in the frontend, dropped from the API prompt."""
        node_id = len(self.nodes) + 1
        self.nodes.append({
            "id": node_id, "type": "MarkdownNote", "pos": [40 + 380 * column, 40 + 260 * row], "size": list(size),
            "flags": {}, "order": node_id - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [text], "color": "#432", "bgcolor": "#653",
        })

    def connect(self, source: dict, output: str, target: dict, input_name: str) -> None:
        slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == output)
        target_slot = next(i for i, o in enumerate(target["inputs"]) if o["name"] == input_name)
        link_id = len(self.links) + 1
        kind = source["outputs"][slot]["type"]
        self.links.append([link_id, source["id"], slot, target["id"], target_slot, kind])
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][target_slot]["link"] = link_id

    def workflow(self, name: str, models: list[dict] | None = None) -> dict:
        """The file's contents; `models` (top-level, the workflow schema's field) lists files to download.

        The template's title and description head the canvas (a note above the graph) and sit in
        `extra.template` in the fields of the frontend's template index (name, title,
        description, mediaType, mediaSubtype), one source for both: `TEMPLATES`.
        """
        template = TEMPLATES[name + ".json"]
        self.note(f"# {template.title}\n\n{template.description}", column=0, row=-1, size=(740, 140))
        workflow = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-asd/{name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 260]},
                      "template": {"name": name, "title": template.title, "description": template.description,
                                   "mediaType": "image", "mediaSubtype": "jpg"}},
            "version": 0.4,
        }
        if models:
            workflow["models"] = [dict(m) for m in models]
        return workflow


def save_video(graph: Graph, images: dict, prefix: str, *, column: int, row: int = 0, fps: float = FPS) -> None:
    video = graph.add("CreateVideo", {"fps": fps}, column=column, row=row)
    graph.connect(images, "IMAGE" if "IMAGE" in [o["name"] for o in images["outputs"]] else "images", video, "images")
    save = graph.add("SaveVideo", {"filename_prefix": prefix, "format": "auto", "codec": "auto"},
                     column=column + 1, row=row, size=(420, 420))
    graph.connect(video, "VIDEO", save, "video")


def sampler_widgets(**overrides) -> dict:
    values = {"seed": SEED, "frames": DEFAULT_FRAMES, "width": 64, "height": 64}
    values.update(overrides)
    return values


def t2v_default(info: dict) -> dict:
    g = Graph(info)
    loader = g.add("ASDModelLoader", {"model_file": "(built-in default)", "dtype": "auto"}, column=0, row=0)
    text = g.add("ASDTextEncode", {"text": PROMPT}, column=0, row=1)
    plan = g.add("ASDStepScheduler", {"steps": 1, "first_chunk_steps": 4}, column=0, row=2)
    sampler = g.add("ASDCausalSampler", sampler_widgets(), column=1, row=0, size=(340, 420))
    g.connect(loader, "model", sampler, "model")
    g.connect(plan, "plan", sampler, "plan")
    g.connect(text, "conditioning", sampler, "positive")
    shown = g.add("PreviewAny", column=1, row=2)
    g.connect(plan, "description", shown, "source")
    decode = g.add("ASDDecode", column=2, row=0)
    g.connect(sampler, "latent", decode, "latent")
    save_video(g, decode, "ASD/t2v_default_1star", column=3)
    return g.workflow("asd_t2v_default_1star")


COMPARE_NOTE = """## One seed, three plans

The three samplers share **one seed** on purpose: the *seed (shared)* primitive feeds all
three, so every plan denoises the same noise and the videos differ only by the plan (the
first chunk gets 4 steps under each, so it is the same in all three). The primitive picks a
new seed after every Run (`randomize`); set it to `fixed` to keep one. Giving each sampler
its own seed would compare different noise, not different plans.
"""


def compare_steps(info: dict) -> dict:
    g = Graph(info)
    loader = g.add("ASDModelLoader", {"model_file": "(built-in default)", "dtype": "auto"}, column=0, row=0)
    text = g.add("ASDTextEncode", {"text": PROMPT}, column=0, row=1)
    seed = g.primitive("seed", SEED, control=SEED_CONTROL, title="seed (shared)", column=0, row=2)
    decoded = []
    # Two grid rows per plan: a sampler with all its widgets is taller than one row.
    for row, (steps, first, label) in zip((0, 2, 4), [(1, 4, "1*"), (2, 4, "2*"), (4, 4, "4 steps")]):
        plan = g.add("ASDStepScheduler", {"steps": steps, "first_chunk_steps": first}, title=f"Plan {label}",
                     column=1, row=row)
        sampler = g.add("ASDCausalSampler", sampler_widgets(), title=f"Sampler {label}", column=2, row=row,
                        size=(340, 440))
        g.connect(loader, "model", sampler, "model")
        g.connect(plan, "plan", sampler, "plan")
        g.connect(text, "conditioning", sampler, "positive")
        g.connect_widget(seed, sampler, "seed")
        decode = g.add("ASDDecode", title=f"Decode {label}", column=3, row=row)
        g.connect(sampler, "latent", decode, "latent")
        decoded.append(decode)
    left = g.add("ImageStitch", {"direction": "right", "match_image_size": True, "spacing_width": 4,
                                 "spacing_color": "white"}, title="1* | 2*", column=4, row=0)
    g.connect(decoded[0], "images", left, "image1")
    g.connect(decoded[1], "images", left, "image2")
    right = g.add("ImageStitch", {"direction": "right", "match_image_size": True, "spacing_width": 4,
                                  "spacing_color": "white"}, title="1* | 2* | 4", column=4, row=2)
    g.connect(left, "IMAGE", right, "image1")
    g.connect(decoded[2], "images", right, "image2")
    save_video(g, right, "ASD/compare_1star_2star_4", column=5)
    g.note(COMPARE_NOTE, column=0, row=3, size=(340, 300))
    return g.workflow("asd_compare_1star_2star_4")


WAN_NOTE = f"""## Wan2.1-T2V-1.3B causal (Self Forcing / ASD weights)

Where each file goes (ComfyUI's usual folders; on opening, ComfyUI offers to download the two
it is missing):

- **ComfyUI/models/asd_models/** (or models/diffusion_models/): the causal transformer, e.g.
  Self Forcing's `self_forcing_dmd.pt` as released, no repackaging
  ([gdhe17/Self-Forcing](https://huggingface.co/gdhe17/Self-Forcing/tree/main/checkpoints)),
  an ASD `.safetensors`, or ComfyUI's repackaged causal Wan files; or let *ASD Download Model
  (Hugging Face)* fetch it instead of the loader.
- **ComfyUI/models/text_encoders/**: [`{UMT5["name"]}`]({UMT5["url"]}) (Load CLIP, type **wan**).
- **ComfyUI/models/vae/**: [`{WAN_VAE["name"]}`]({WAN_VAE["url"]}).

Self Forcing weights are trained for 4 steps (plan `4`); ASD weights sample at `1*`, `2*` or `4`.
Size 832x480, 81 frames = 21 latent frames = 7 chunks of 3, saved at Wan's 16 fps.
"""


def wan_causal(info: dict) -> dict:
    g = Graph(info)
    loader = g.add("ASDModelLoader", {"model_file": "self_forcing_dmd.pt", "dtype": "auto"}, column=0, row=0)
    clip = g.add("CLIPLoader", {"clip_name": UMT5["name"], "type": "wan", "device": "default"}, column=0, row=1,
                 models=[UMT5])
    text = g.add("CLIPTextEncode", {"text": "A fox runs through fresh snow in a sunlit pine forest, cinematic"},
                 column=0, row=2, size=(320, 200))
    g.connect(clip, "CLIP", text, "clip")
    plan = g.add("ASDStepScheduler", {"steps": 4, "first_chunk_steps": 4}, column=1, row=2)
    sampler = g.add("ASDCausalSampler", sampler_widgets(frames=81, width=832, height=480), column=1, row=0,
                    size=(340, 420))
    g.connect(loader, "model", sampler, "model")
    g.connect(plan, "plan", sampler, "plan")
    g.connect(text, "CONDITIONING", sampler, "positive")
    info_box = g.add("PreviewAny", column=2, row=2)
    g.connect(loader, "info", info_box, "source")
    vae = g.add("VAELoader", {"vae_name": WAN_VAE["name"]}, column=2, row=1, models=[WAN_VAE])
    decode = g.add("VAEDecode", column=2, row=0)
    g.connect(sampler, "latent", decode, "samples")
    g.connect(vae, "VAE", decode, "vae")
    save_video(g, decode, "ASD/wan_causal", column=3, fps=WAN_FPS)
    g.note(WAN_NOTE, column=3, row=2, size=(460, 320))
    return g.workflow("asd_wan2.1_1.3b_causal", models=[UMT5, WAN_VAE])


CONTINUE_NOTE = """## Continue a video

Put a video in ComfyUI's **input/** folder (or upload it in *Load Video*). Its last frames
(1 + 4*k of them, 64x64 for the built-in default) are encoded into a prefix; the sampler fills
its cache with them and generates what comes next. `include_prefix` puts the original frames
in front of the new ones in the saved video. For Wan checkpoints use VAEEncode (Wan VAE) for
the prefix and width/height of the input video.
"""


def continue_video(info: dict) -> dict:
    g = Graph(info)
    load = g.add("LoadVideo", {"file": "asd_input.mp4"}, column=0, row=0, size=(320, 360))
    parts = g.add("GetVideoComponents", column=0, row=2)
    g.connect(load, "VIDEO", parts, "video")
    prefix = g.add("ASDEncodeVideoPrefix", {"last_frames": 9}, column=1, row=0)
    g.connect(parts, "images", prefix, "images")
    loader = g.add("ASDModelLoader", {"model_file": "(built-in default)", "dtype": "auto"}, column=1, row=1)
    text = g.add("ASDTextEncode", {"text": PROMPT}, column=1, row=2)
    plan = g.add("ASDStepScheduler", {"steps": 1, "first_chunk_steps": 4}, column=1, row=3)
    sampler = g.add("ASDCausalSampler", sampler_widgets(frames=9), column=2, row=0, size=(340, 440))
    g.connect(loader, "model", sampler, "model")
    g.connect(plan, "plan", sampler, "plan")
    g.connect(text, "conditioning", sampler, "positive")
    g.connect(prefix, "prefix", sampler, "prefix")
    decode = g.add("ASDDecode", column=3, row=0)
    g.connect(sampler, "latent", decode, "latent")
    save_video(g, decode, "ASD/continued", column=4)
    g.note(CONTINUE_NOTE, column=2, row=2)
    return g.workflow("asd_continue_video")


LONG_FRAMES = 141  # 36 latent frames: 4x the 9 the built-in default was trained on
LONG_WINDOW = 9  # latent frames in the rolling cache: the trained length
LONG_SINKS = 3  # latent frames kept for ever: the first chunk

LONG_NOTE = f"""## Longer than trained, at constant memory

The built-in default was trained on 33 frames (9 latent frames). This makes {LONG_FRAMES} frames
(36 latent frames, 4x) with a **rolling KV cache** of `window_frames` = {LONG_WINDOW} latent
frames: the first `sink_frames` = {LONG_SINKS} (the first chunk, an attention sink) stay for ever,
the oldest others are dropped as new chunks come, so memory stays that of the trained length
however long the video. `sink_frames` 0 drops the sink (it drifts more); -1 is one chunk.
"""


def long_video(info: dict) -> dict:
    g = Graph(info)
    loader = g.add("ASDModelLoader", {"model_file": "(built-in default)", "dtype": "auto"}, column=0, row=0)
    text = g.add("ASDTextEncode", {"text": PROMPT}, column=0, row=1)
    plan = g.add("ASDStepScheduler", {"steps": 1, "first_chunk_steps": 4}, column=0, row=2)
    sampler = g.add("ASDCausalSampler", sampler_widgets(frames=LONG_FRAMES, window_frames=LONG_WINDOW,
                                                        sink_frames=LONG_SINKS), column=1, row=0, size=(340, 480))
    g.connect(loader, "model", sampler, "model")
    g.connect(plan, "plan", sampler, "plan")
    g.connect(text, "conditioning", sampler, "positive")
    decode = g.add("ASDDecode", column=2, row=0)
    g.connect(sampler, "latent", decode, "latent")
    save_video(g, decode, "ASD/long_video", column=3)
    g.note(LONG_NOTE, column=2, row=2, size=(460, 280))
    return g.workflow("asd_long_video")


SWITCH_PROMPTS = ("a red circle", "a blue circle")
SWITCH_FRAMES = 45  # 12 latent frames = 4 chunks of 3: two before the switch, two after
SWITCH_AT = 21  # pixel frame 21 = latent frame 6, where the third chunk begins

SWITCH_NOTE = f"""## Switch the prompt mid-video

*{SWITCH_PROMPTS[0]}* (the sampler's positive) fills frames 0-{SWITCH_AT - 1}; from frame {SWITCH_AT} the
*ASD Prompt Schedule* switches to *{SWITCH_PROMPTS[1]}*. Up to four prompts, each from its
`start_frame` (pixel frames of the generated video; a start between chunks snaps to the nearest
chunk start, 1 + 12n for chunks of 3, with a warning in the console). `recache` on recomputes the
KV cache of the frames already made under the new prompt (LongLive's re-cache); off keeps the old
cache, so only new chunks see the new prompt.
"""


def prompt_switch(info: dict) -> dict:
    g = Graph(info)
    loader = g.add("ASDModelLoader", {"model_file": "(built-in default)", "dtype": "auto"}, column=0, row=0)
    first = g.add("ASDTextEncode", {"text": SWITCH_PROMPTS[0]}, title="Prompt from frame 0", column=0, row=1)
    second = g.add("ASDTextEncode", {"text": SWITCH_PROMPTS[1]}, title=f"Prompt from frame {SWITCH_AT}",
                   column=0, row=2)
    plan = g.add("ASDStepScheduler", {"steps": 1, "first_chunk_steps": 4}, column=0, row=3)
    schedule = g.add("ASDPromptSchedule", {"start_frame_1": SWITCH_AT, "recache": True}, column=1, row=2,
                     size=(340, 300))
    g.connect(second, "conditioning", schedule, "conditioning_1")
    sampler = g.add("ASDCausalSampler", sampler_widgets(frames=SWITCH_FRAMES), column=1, row=0, size=(340, 480))
    g.connect(loader, "model", sampler, "model")
    g.connect(plan, "plan", sampler, "plan")
    g.connect(first, "conditioning", sampler, "positive")
    g.connect(schedule, "schedule", sampler, "prompt_schedule")
    decode = g.add("ASDDecode", column=2, row=0)
    g.connect(sampler, "latent", decode, "latent")
    save_video(g, decode, "ASD/prompt_switch", column=3)
    g.note(SWITCH_NOTE, column=2, row=2, size=(460, 300))
    return g.workflow("asd_prompt_switch")


START_IMAGE = "asd_start_image.png"  # workflows/asd_start_image.png: copy it into ComfyUI/input/
START_PROMPT = "a red circle and a blue circle"  # the start image's shapes

I2V_NOTE = f"""## Image to video

Copy **`workflows/{START_IMAGE}`** (a 64x64 frame of the built-in default's world) into
**ComfyUI/input/**, or pick any 64x64 image in *Load Image*. *ASD Encode Start Image* encodes
it with the built-in VAE; the sampler seeds its cache with it and the video begins with it:
the saved video is the start frame, then the latent frames `frames` asks for (33 -> 9 latent
frames -> 36 frames after the start). For Wan checkpoints encode the
image with core *VAEEncode* (Wan VAE) instead and set width/height to the image's size.
"""


def image_to_video(info: dict) -> dict:
    g = Graph(info)
    image = g.add("LoadImage", {"image": START_IMAGE}, column=0, row=0, size=(320, 360))
    start = g.add("ASDEncodeStartImage", column=1, row=0)
    g.connect(image, "IMAGE", start, "image")
    loader = g.add("ASDModelLoader", {"model_file": "(built-in default)", "dtype": "auto"}, column=1, row=1)
    text = g.add("ASDTextEncode", {"text": START_PROMPT}, column=1, row=2)
    plan = g.add("ASDStepScheduler", {"steps": 1, "first_chunk_steps": 4}, column=1, row=3)
    sampler = g.add("ASDCausalSampler", sampler_widgets(), column=2, row=0, size=(340, 480))
    g.connect(loader, "model", sampler, "model")
    g.connect(plan, "plan", sampler, "plan")
    g.connect(text, "conditioning", sampler, "positive")
    g.connect(start, "start_latent", sampler, "start_latent")
    decode = g.add("ASDDecode", column=3, row=0)
    g.connect(sampler, "latent", decode, "latent")
    save_video(g, decode, "ASD/i2v", column=4)
    g.note(I2V_NOTE, column=2, row=2, size=(420, 280))
    return g.workflow("asd_i2v")


def start_image():
    """The I2V workflow's start image: frame 0 of a fixed video of the built-in default's world."""
    from asd_core.toy.domain import ShapeSpec, VideoSpec, render

    spec = VideoSpec((ShapeSpec("red", "circle", 16.0, (18.0, 20.0), (1.0, 0.5)),
                      ShapeSpec("blue", "circle", 14.0, (44.0, 42.0), (-1.0, -0.5))))
    return render(spec, frames=1, height=64, width=64)[0]


class Template(NamedTuple):
    title: str
    description: str  # one line: what the template browser and the canvas header say
    build: Callable[[dict], dict]


TEMPLATES = {
    "asd_t2v_default_1star.json": Template(
        "ASD text to video (built-in, 1*)",
        "Text to video with the built-in default at plan 1*: 33 frames of 64x64, seconds on a CPU.", t2v_default),
    "asd_compare_1star_2star_4.json": Template(
        "ASD plans compared: 1*, 2*, 4",
        "One prompt and one seed under plans 1*, 2* and 4 side by side, from one checkpoint.", compare_steps),
    "asd_wan2.1_1.3b_causal.json": Template(
        "ASD Wan2.1 1.3B causal (Self Forcing / ASD)",
        "A causal Wan2.1-T2V-1.3B checkpoint with ComfyUI's umt5 and Wan VAE: 81 frames of 832x480.", wan_causal),
    "asd_continue_video.json": Template(
        "ASD continue a video",
        "The last frames of an input video fill the cache; the model generates what comes next.", continue_video),
    "asd_long_video.json": Template(
        "ASD long video (rolling window + sink)",
        f"{LONG_FRAMES} frames, 4x the trained length, at constant memory: a rolling KV cache with an attention sink.",
        long_video),
    "asd_prompt_switch.json": Template(
        "ASD prompt switch (KV re-cache)",
        f"'{SWITCH_PROMPTS[0]}' then '{SWITCH_PROMPTS[1]}' from frame {SWITCH_AT}, the cache re-computed at the "
        "switch.", prompt_switch),
    "asd_i2v.json": Template(
        "ASD image to video (built-in)",
        "A start image begins the video: encoded with the built-in VAE, it seeds the cache.", image_to_video),
}
WORKFLOWS = {name: template.build for name, template in TEMPLATES.items()}


def object_info() -> dict:
    core = comfy_executor.core_object_info()
    if core is None:
        raise SystemExit(f"needs the recorded ComfyUI schema at {comfy_executor.CORE_OBJECT_INFO}")
    pack = comfy_executor.load_pack()
    return {**core, **comfy_executor.pack_object_info(pack)}


def write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


def main() -> None:
    import io

    from PIL import Image

    info = object_info()
    for name, build in WORKFLOWS.items():
        write_atomically(HERE / name, (json.dumps(build(info), indent=2) + "\n").encode())
        print(f"wrote workflows/{name}")
    png = io.BytesIO()
    Image.fromarray(start_image()).save(png, format="PNG")
    write_atomically(HERE / START_IMAGE, png.getvalue())
    print(f"wrote workflows/{START_IMAGE}")


if __name__ == "__main__":
    main()
