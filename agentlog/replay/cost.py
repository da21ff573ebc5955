"""What a run cost: tokens and USD it spent on live calls, and what reusing recorded answers saved.

A fold of the run's events (``agentlog.actors.Spending``) priced by a ``PriceTable``; a
model without a price makes the amount unknown (``None``), never 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from agentlog.actors import Spending
from agentlog.events import Event
from agentlog.models.prices import PriceTable, format_usd


class RunCost(msgspec.Struct, frozen=True, kw_only=True):
    spent_usd: float | None
    saved_usd: float | None
    spent_tokens: int
    reused_tokens: int
    calls_made: int
    calls_reused: int
    latency_ms: float  # model time of the live calls
    unpriced: list[str] = []  # models whose tokens have no price
    budget_usd: float | None = None
    budget_tokens: int | None = None

    @property
    def spent_text(self) -> str:
        return format_usd(self.spent_usd, self.unpriced)

    @property
    def saved_text(self) -> str:
        return format_usd(self.saved_usd, self.unpriced)


def run_cost(events: Iterable[Event], prices: PriceTable | None = None) -> RunCost:
    s = Spending(prices)
    for event in events:
        s.observe(event)
    return RunCost(
        spent_usd=s.spent_usd, saved_usd=s.saved_usd, spent_tokens=s.spent_tokens, reused_tokens=s.reused_tokens,
        calls_made=s.calls_made, calls_reused=s.calls_reused, latency_ms=round(s.latency_ms, 3),
        unpriced=sorted(s.unpriced_spent | s.unpriced_saved), budget_usd=s.budget_usd, budget_tokens=s.budget_tokens,
    )
