"""The models, one file each; importing a model module registers it."""

from vaelab.models import vae  # noqa: F401  (registers "vae")
from vaelab.models.base import (
    MODELS,
    Batch,
    LossOutput,
    Model,
    ModelConfig,
    Phase,
    StepContext,
    build_model,
    get_model_class,
    register,
)

__all__ = [
    "MODELS",
    "Batch",
    "LossOutput",
    "Model",
    "ModelConfig",
    "Phase",
    "StepContext",
    "build_model",
    "get_model_class",
    "register",
]
