"""Reaching models: the gateway (openai client + tenacity), model names, the offline model."""

from .gateway import NO_MODEL_HINT, Endpoint, Gateway, RetryPolicy, classify
from .offline import LABEL as OFFLINE_LABEL
from .spec import ModelNameError, ModelSpec, parse_model
from .types import AttemptFailure, CallFailed, Completion, Delta, ModelNotConfigured

__all__ = [
    "NO_MODEL_HINT", "OFFLINE_LABEL", "AttemptFailure", "CallFailed", "Completion", "Delta", "Endpoint",
    "Gateway", "ModelNameError", "ModelNotConfigured", "ModelSpec", "RetryPolicy", "classify", "parse_model",
]
