"""A small stand-in for ComfyUI's prompt executor, for tests without a ComfyUI checkout.

It takes an API-format prompt (what `POST /prompt` accepts), checks every node the way
ComfyUI's validation does (class known, required inputs present, link types match the
source's output type, widget values of the right type, in range, among the combo options),
then runs OUR nodes for real in dependency order. ComfyUI's own nodes are never imitated:
they are checked against the schema a real ComfyUI served (`shared/comfyui/object_info.json`,
ComfyUI a125cd8 on a CPU), and our nodes that need their outputs are checked but not run.

Where that recording is not beside the checkout (a CI clone elsewhere), `tests/data/
comfyui_core_schema.json` stands in: the entries of the core nodes our workflows use, cut
from the same recording with tooltips and descriptions removed (interface facts only:
input names, types, defaults, ranges, options, outputs), so the workflow tests never skip.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE_OBJECT_INFO = Path(__file__).resolve().parents[2] / "shared/comfyui/object_info.json"
CORE_SCHEMA_SUBSET = Path(__file__).resolve().parent / "data" / "comfyui_core_schema.json"
PACK_NAME = "comfyui_asd_pack"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Core combos listing the files of the serving machine's folders (empty where the schema was
# recorded): a value there is a file name the user provides, checked by its extension only.
FILE_COMBOS = {
    ("CLIPLoader", "clip_name"): (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt"),
    ("VAELoader", "vae_name"): (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt"),
    ("UNETLoader", "unet_name"): (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt", ".gguf"),
    ("LoadVideo", "file"): (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".webp"),
    ("LoadImage", "image"): (".png", ".jpg", ".jpeg", ".webp"),
}


class PromptError(ValueError):
    """What ComfyUI would answer with a 400 and `node_errors`."""


def load_pack(name: str = PACK_NAME):
    """Import the repository as ComfyUI does: the folder's __init__.py as a package."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def node_info(name: str, cls, display_names: dict) -> dict:
    """One node's entry in ComfyUI's `GET /object_info` (classic API), built from its class."""
    inputs = cls.INPUT_TYPES()
    info = {
        "input": inputs,
        "input_order": {section: list(values) for section, values in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
        "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        "name": name,
        "display_name": display_names.get(name, name),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": f"custom_nodes.{REPO.name}",
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    # What the server sends is JSON: tuples become lists, as the frontend and converters see them.
    return json.loads(json.dumps(info))


def pack_object_info(pack) -> dict:
    return {name: node_info(name, cls, pack.NODE_DISPLAY_NAME_MAPPINGS) for name, cls in pack.NODE_CLASS_MAPPINGS.items()}


def core_object_info() -> dict:
    """ComfyUI's own nodes: the full recording when it is there, else the in-repo subset."""
    source = CORE_OBJECT_INFO if CORE_OBJECT_INFO.is_file() else CORE_SCHEMA_SUBSET
    return json.loads(source.read_text())


def input_spec(schema: dict, name: str):
    for section in ("required", "optional"):
        if name in schema["input"].get(section, {}):
            return section, schema["input"][section][name]
    return None, None


def spec_type_and_options(spec) -> tuple[str, dict, list | None]:
    """(type, options, combo choices) of one input spec, classic or V3 combo form."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(kind, list):
        return "COMBO", options, kind
    if kind == "COMBO":
        return "COMBO", options, options.get("options")
    return kind, options, None


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def check_widget(node_id: str, name: str, value, spec, class_type: str = "") -> None:
    kind, options, choices = spec_type_and_options(spec)
    where = f"node {node_id} input {name!r}"
    if (class_type, name) in FILE_COMBOS:
        if not isinstance(value, str) or not value.lower().endswith(FILE_COMBOS[class_type, name]):
            raise PromptError(f"{where}: expected a file name ending in {FILE_COMBOS[class_type, name]}, got {value!r}")
        return
    if kind == "COMBO":
        if choices and value not in choices:
            raise PromptError(f"{where}: value {value!r} not in the options {choices[:10]}")
        return
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            raise PromptError(f"{where}: expected INT, got {value!r}")
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PromptError(f"{where}: expected FLOAT, got {value!r}")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            raise PromptError(f"{where}: expected BOOLEAN, got {value!r}")
    elif kind == "STRING":
        if not isinstance(value, str):
            raise PromptError(f"{where}: expected STRING, got {value!r}")
    else:
        raise PromptError(f"{where}: a {kind} input needs a link, got the value {value!r}")
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            raise PromptError(f"{where}: {value} is below the minimum {options['min']}")
        if "max" in options and value > options["max"]:
            raise PromptError(f"{where}: {value} is above the maximum {options['max']}")


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's non-strict rule: equal, a wildcard, or an overlap of comma-separated unions."""
    if received == expected or "*" in (received, expected):
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


class Executor:
    def __init__(self, pack, core_info: dict | None):
        self.pack = pack
        self.ours = pack.NODE_CLASS_MAPPINGS
        self.schemas = dict(core_info or {})
        self.schemas.update(pack_object_info(pack))
        self.ui: dict[str, dict] = {}  # node id -> the "ui" part our nodes returned

    def validate(self, prompt: dict) -> list[str]:
        """Check the whole prompt; returns the ids of the nodes ComfyUI would execute."""
        if not prompt:
            raise PromptError("empty prompt")
        for node_id, node in prompt.items():
            kind = node.get("class_type")
            if kind not in self.schemas:
                raise PromptError(f"node {node_id}: unknown class_type {kind!r}")
        outputs = [i for i, n in prompt.items() if self.schemas[n["class_type"]].get("output_node")]
        if not outputs:
            raise PromptError("prompt has no output node (e.g. SaveVideo): ComfyUI would refuse it")
        needed: list[str] = []
        visiting: set[str] = set()

        def visit(node_id: str) -> None:
            if node_id in needed:
                return
            if node_id in visiting:
                raise PromptError(f"cycle through node {node_id}")
            visiting.add(node_id)
            for source in self._check_node(prompt, node_id):
                visit(source)
            visiting.discard(node_id)
            needed.append(node_id)

        for node_id in outputs:
            visit(node_id)
        return needed  # dependencies first

    def _check_node(self, prompt: dict, node_id: str) -> list[str]:
        node = prompt[node_id]
        schema = self.schemas[node["class_type"]]
        inputs = node.get("inputs", {})
        for name in schema["input"].get("required", {}):
            if name not in inputs:
                raise PromptError(f"node {node_id} ({node['class_type']}): required input {name!r} missing")
        sources = []
        for name, value in inputs.items():
            section, spec = input_spec(schema, name)
            if spec is None:
                raise PromptError(f"node {node_id} ({node['class_type']}): unknown input {name!r}")
            kind = spec_type_and_options(spec)[0]
            if is_link(value):
                source_id, slot = value
                if source_id not in prompt:
                    raise PromptError(f"node {node_id} input {name!r}: links to missing node {source_id}")
                source_schema = self.schemas[prompt[source_id]["class_type"]]
                if not 0 <= slot < len(source_schema["output"]):
                    raise PromptError(f"node {node_id} input {name!r}: node {source_id} has no output {slot}")
                received = source_schema["output"][slot]
                received = "COMBO" if isinstance(received, list) else received
                if not types_match(received, kind):
                    raise PromptError(f"node {node_id} input {name!r}: expects {kind}, linked to {received}")
                sources.append(source_id)
            else:
                if isinstance(value, dict) and "__value__" in value:
                    value = value["__value__"]
                check_widget(node_id, name, value, spec, node["class_type"])
        return sources

    def run(self, prompt: dict, given: dict[str, tuple] | None = None) -> dict[str, tuple]:
        """Validate, then execute our nodes whose inputs do not come from ComfyUI's own nodes.

        `given`: outputs the caller supplies for core nodes (e.g. the IMAGE a LoadImage of a
        known file gives), so the nodes after them run too; the core nodes still never run here.
        """
        order = self.validate(prompt)
        results: dict[str, tuple] = {}
        for node_id, outputs in (given or {}).items():
            kind = prompt[node_id]["class_type"]
            if kind in self.ours or len(outputs) != len(self.schemas[kind]["output"]):
                raise PromptError(f"node {node_id}: given outputs must be a core node's, one per output of {kind}")
            results[node_id] = tuple(outputs)
        for node_id in order:
            node = prompt[node_id]
            if node_id in results:
                continue
            cls = self.ours.get(node["class_type"])
            if cls is None:
                continue  # a core node: schema-checked above, never imitated
            kwargs, runnable = {}, True
            for name, value in node.get("inputs", {}).items():
                if is_link(value):
                    if value[0] not in results:
                        runnable = False
                        break
                    kwargs[name] = results[value[0]][value[1]]
                else:
                    kwargs[name] = value["__value__"] if isinstance(value, dict) and "__value__" in value else value
            if not runnable:
                continue
            results[node_id] = self.call(node_id, cls, kwargs)
        return results

    def call(self, node_id: str, cls, kwargs: dict) -> tuple:
        output = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(output, dict):
            self.ui[node_id] = output.get("ui", {})
            output = output["result"]
        if not isinstance(output, tuple) or len(output) != len(cls.RETURN_TYPES):
            raise PromptError(f"node {node_id}: {cls.__name__} returned {type(output).__name__} "
                              f"of length {len(output)}, expected {len(cls.RETURN_TYPES)} outputs")
        return output


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """comfy-cli's own UI -> API converter (what the frontend's 'Export (API)' produces)."""
    from comfy_cli.workflow_to_api import convert_ui_to_api

    return convert_ui_to_api(workflow, object_info)
