"""The pack's ComfyUI nodes: thin adapters (validation, types, progress) over asd_core."""

from . import host
from .loader import ASDHubDownloadLoader, ASDModelLoader
from .plan import ASDStepScheduler
from .sampler import ASDCausalSampler
from .schedule import ASDPromptSchedule
from .toy import ASDDecode, ASDEncodeStartImage, ASDEncodeVideoPrefix, ASDTextEncode

NODE_CLASS_MAPPINGS = {
    "ASDModelLoader": ASDModelLoader,
    "ASDHubDownloadLoader": ASDHubDownloadLoader,
    "ASDStepScheduler": ASDStepScheduler,
    "ASDCausalSampler": ASDCausalSampler,
    "ASDTextEncode": ASDTextEncode,
    "ASDDecode": ASDDecode,
    "ASDEncodeVideoPrefix": ASDEncodeVideoPrefix,
    "ASDEncodeStartImage": ASDEncodeStartImage,
    "ASDPromptSchedule": ASDPromptSchedule,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ASDModelLoader": "ASD Causal Video Model Loader",
    "ASDHubDownloadLoader": "ASD Download Model (Hugging Face)",
    "ASDStepScheduler": "ASD Step Scheduler (FFE)",
    "ASDCausalSampler": "ASD Causal Sampler",
    "ASDTextEncode": "ASD Text Encode (built-in)",
    "ASDDecode": "ASD Decode (built-in)",
    "ASDEncodeVideoPrefix": "ASD Encode Video Prefix (built-in)",
    "ASDEncodeStartImage": "ASD Encode Start Image (built-in)",
    "ASDPromptSchedule": "ASD Prompt Schedule",
}

host.register_model_folder()
