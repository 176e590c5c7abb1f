"""The models, one file each; importing a model module registers it."""

from vaelab.models import aae, ae, beta_vae, cvae, iwae, vae  # noqa: F401  (each registers itself)
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
