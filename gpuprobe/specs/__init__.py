"""Model and GPU registries: architecture specs and datasheet figures, plus loading a config.json."""
from gpuprobe.specs.gpus import GPUSpec, detect_gpu, get_gpu, list_gpus
from gpuprobe.specs.models import ModelSpec, get_model, list_models, load_model_spec

__all__ = [
    "GPUSpec",
    "ModelSpec",
    "detect_gpu",
    "get_gpu",
    "get_model",
    "list_gpus",
    "list_models",
    "load_model_spec",
]
