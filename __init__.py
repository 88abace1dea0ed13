"""ComfyUI entry point of the ASD node pack (classic node API).

ComfyUI imports this folder as a package and reads NODE_CLASS_MAPPINGS; nothing here
imports ComfyUI itself, so the pack also imports (and its tests run) outside ComfyUI.

pytest imports this file too (the checkout is a package, so it sets the package up before
running tests), and where the checkout's folder name is not a Python identifier (a clone in
`tmp.Ab3x` or `my-pack`) it imports it as a lone module, with no package to import `.nodes`
relative to. There the mappings are left out: only ComfyUI reads them.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
