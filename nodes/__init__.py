"""The pack's ComfyUI nodes: thin adapters (validation, types, progress) over asd_core."""

from . import host
from .loader import ASDHubDownloadLoader, ASDModelLoader
from .plan import ASDStepScheduler
from .sampler import ASDCausalSampler
from .toy import ASDDecode, ASDEncodeVideoPrefix, ASDTextEncode

NODE_CLASS_MAPPINGS = {
    "ASDModelLoader": ASDModelLoader,
    "ASDHubDownloadLoader": ASDHubDownloadLoader,
    "ASDStepScheduler": ASDStepScheduler,
    "ASDCausalSampler": ASDCausalSampler,
    "ASDTextEncode": ASDTextEncode,
    "ASDDecode": ASDDecode,
    "ASDEncodeVideoPrefix": ASDEncodeVideoPrefix,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ASDModelLoader": "ASD Causal Video Model Loader",
    "ASDHubDownloadLoader": "ASD Download Model (Hugging Face)",
    "ASDStepScheduler": "ASD Step Scheduler (FFE)",
    "ASDCausalSampler": "ASD Causal Sampler",
    "ASDTextEncode": "ASD Text Encode (built-in)",
    "ASDDecode": "ASD Decode (built-in)",
    "ASDEncodeVideoPrefix": "ASD Encode Video Prefix (built-in)",
}

host.register_model_folder()
