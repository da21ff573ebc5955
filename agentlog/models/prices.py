"""What a model's tokens cost: USD per million input (prompt) and output (completion) tokens.

Defaults cover the common OpenAI models at their standard list prices (dated in
docs/experiments.md); entries in the config file's ``[prices]`` table add models or
override a default. The offline and local models, and any model that is not reached over
the network, cost nothing. A model with no price has an *unknown* cost, never 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import msgspec

from .spec import ModelNameError, parse_model

DEFAULT_PRICES_DATE = "2025-08"


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """USD per million tokens: ``input`` for the prompt, ``output`` for the completion."""

    input: float
    output: float

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a price of 0 or more (USD per million tokens), not {value}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


FREE = Price(0.0, 0.0)

# Standard (not batch, not cached-input) list prices, USD per million tokens.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
}

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-2024-08-06 is priced as gpt-4o


class PriceTable:
    """Prices by model name: the user's entries first, then the defaults."""

    def __init__(self, entries: Mapping[str, Price] | None = None, *, defaults: bool = True):
        self.entries: dict[str, Price] = {**(DEFAULT_PRICES if defaults else {}), **(entries or {})}

    def price(self, model: str) -> Price | None:
        """The price of ``model`` as a run names it; ``None`` when unknown."""
        if model in self.entries:
            return self.entries[model]
        try:
            spec = parse_model(model)
        except ModelNameError:
            return None
        if spec.provider != "openai":  # offline, local, in-process: nothing is paid per token
            return FREE
        for name in (spec.name, _DATED.sub("", spec.name)):
            if name in self.entries:
                return self.entries[name]
        return None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.price(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)


def format_usd(value: float | None, unpriced: object = ()) -> str:
    """``$0.0123``; ``unknown`` (naming the models without a price) when a price is missing."""
    if value is None:
        names = ", ".join(sorted(unpriced)) if unpriced else ""  # type: ignore[call-overload]
        return f"unknown (no price for {names})" if names else "unknown"
    return f"${value:,.4f}"
