"""Reaching models: the gateway (openai client + tenacity), model names, the offline model,
in-process models and the scripted test double."""

from .gateway import NO_MODEL_HINT, Endpoint, Gateway, RetryPolicy, classify
from .inprocess import (
    CallContext,
    FunctionModel,
    Model,
    ModelLike,
    ModelRequest,
    ModelUnavailable,
    model_name,
    named_models,
)
from .offline import LABEL as OFFLINE_LABEL
from .prices import DEFAULT_PRICES, DEFAULT_PRICES_DATE, Price, PriceTable, format_usd
from .spec import ModelNameError, ModelSpec, parse_model
from .scripted import ScriptedModel, UnscriptedCall
from .types import AttemptFailure, CallFailed, Completion, Delta, ModelNotConfigured

__all__ = [
    "DEFAULT_PRICES", "DEFAULT_PRICES_DATE", "NO_MODEL_HINT", "OFFLINE_LABEL", "AttemptFailure", "CallContext",
    "CallFailed", "Completion", "Delta", "Endpoint", "FunctionModel", "Gateway", "Model", "ModelLike",
    "ModelNameError", "ModelNotConfigured", "ModelRequest", "ModelSpec", "ModelUnavailable", "Price", "PriceTable",
    "RetryPolicy", "ScriptedModel", "UnscriptedCall", "classify", "format_usd", "model_name", "named_models",
    "parse_model",
]
