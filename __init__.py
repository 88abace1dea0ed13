"""ComfyUI entry point of the ASD node pack (classic node API).

ComfyUI imports this folder as a package and reads NODE_CLASS_MAPPINGS; nothing here
imports ComfyUI itself, so the pack also imports (and its tests run) outside ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
