"""Model names: ``offline``, ``local[:NAME|:PATH]``, ``python:MODULE:FACTORY``, ``openai:NAME``, or a bare name.

A bare name (``gpt-4o``, ``llama3.1``) goes to the configured OpenAI-compatible endpoint:
OpenAI itself unless ``OPENAI_BASE_URL``/``--base-url`` points elsewhere.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Provider = Literal["offline", "local", "python", "openai"]


class ModelSpec(msgspec.Struct, frozen=True):
    provider: Provider
    name: str  # what goes in the request's ``model`` field (``local``: name or path; ``python``: MODULE:FACTORY)
    text: str  # as the user wrote it


class ModelNameError(ValueError):
    pass


def parse_model(text: str) -> ModelSpec:
    text = text.strip()
    if not text:
        raise ModelNameError("empty model name")
    head, sep, rest = text.partition(":")
    if text == "offline":
        return ModelSpec("offline", "offline", text)
    if head == "local":
        return ModelSpec("local", rest if sep else "smollm2", text)
    if head == "python":
        module, colon, factory = rest.partition(":")
        if not (sep and colon and _dotted(module) and _dotted(factory)):
            raise ModelNameError(f"model {text!r}: write an in-process model as python:package.module:factory")
        return ModelSpec("python", rest, text)
    if head == "openai" and sep:
        if not rest:
            raise ModelNameError(f"model {text!r}: give a model after 'openai:'")
        return ModelSpec("openai", rest, text)
    return ModelSpec("openai", text, text)


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))
