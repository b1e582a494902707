"""Model and GPU registries: architecture specs and datasheet figures, plus loading a config.json."""
from gpuprobe.specs.gpus import GPUSpec, detect_gpu, get_gpu, gpu_from_device_name, list_gpus
from gpuprobe.specs.models import ModelSpec, check_context, get_model, list_models, load_model_spec

__all__ = [
    "GPUSpec",
    "ModelSpec",
    "check_context",
    "detect_gpu",
    "get_gpu",
    "get_model",
    "gpu_from_device_name",
    "list_gpus",
    "list_models",
    "load_model_spec",
]
