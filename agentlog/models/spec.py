"""Model names: ``offline``, ``local[:NAME|:PATH]``, ``openai:NAME``, or a bare name.

A bare name (``gpt-4o``, ``llama3.1``) goes to the configured OpenAI-compatible endpoint:
OpenAI itself unless ``OPENAI_BASE_URL``/``--base-url`` points elsewhere.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Provider = Literal["offline", "local", "openai"]


class ModelSpec(msgspec.Struct, frozen=True):
    provider: Provider
    name: str  # what goes in the request's ``model`` field (for ``local``: model name or path)
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
    if head == "openai" and sep:
        if not rest:
            raise ModelNameError(f"model {text!r}: give a model after 'openai:'")
        return ModelSpec("openai", rest, text)
    return ModelSpec("openai", text, text)
