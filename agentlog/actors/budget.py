"""What a run spends, and the budgets that stop it before a request is sent.

``Spending`` folds a run's events into tokens and USD spent (live answers) and reused
(answers taken from the log), by the price of the model each call asked for; the replay
family reports cost with it. ``Budget`` is the orchestrator's check before each request
leaves: the run's own limits (``RunStarted``/``SettingsChanged``), and optionally a
``SharedBudget`` that adds up what the runs of a sweep spend under one limit.

A call is sent only while the spend is below the budget: the call that crosses it is
paid for and kept, the next one is not sent. Reusing a recorded answer costs nothing and
is always allowed.
"""

from __future__ import annotations

import threading

from agentlog.events import (
    BudgetReached,
    Event,
    LLMCallAnswered,
    LLMCallRequested,
    RunFailed,
    RunForked,
    RunStarted,
    SettingsChanged,
)
from agentlog.models.prices import PriceTable


class Spending:
    """A fold of one run's events: what it spent and reused, in tokens and USD.

    A fork counts from its fork point: what it copied from its parent is the parent's.
    ``spent_usd`` is ``None`` when a live answer came from a model with no price.
    """

    def __init__(self, prices: PriceTable | None = None):
        self.prices = prices if prices is not None else PriceTable()
        self.models: dict[str, str] = {}  # call id -> the model the call asked for
        self.budget_usd: float | None = None
        self.budget_tokens: int | None = None
        self._reset()

    def _reset(self) -> None:
        self.spent_tokens = self.reused_tokens = 0
        self.calls_made = self.calls_reused = 0
        self.latency_ms = 0.0
        self._spent_usd = self._saved_usd = 0.0
        self.unpriced_spent: set[str] = set()
        self.unpriced_saved: set[str] = set()

    @property
    def spent_usd(self) -> float | None:
        return None if self.unpriced_spent else self._spent_usd

    @property
    def saved_usd(self) -> float | None:
        return None if self.unpriced_saved else self._saved_usd

    def observe(self, event: Event) -> tuple[int, float | None] | None:
        """Fold ``event``; for a live answer, return what it cost: ``(tokens, usd or None)``."""
        if type(event) not in _FOLDED:  # most of a run's events: nothing to fold
            return None
        match event:
            case RunStarted():
                self.budget_usd, self.budget_tokens = event.budget_usd, event.budget_tokens
            case SettingsChanged():
                if event.budget_usd is not None:
                    self.budget_usd = event.budget_usd
                if event.budget_tokens is not None:
                    self.budget_tokens = event.budget_tokens
            case RunForked():
                self._reset()
            case LLMCallRequested():
                self.models[event.call_id] = str(event.request.get("model", ""))
            case LLMCallAnswered():
                model = self.models.get(event.call_id) or event.model
                usd = self.prices.cost(model, event.usage.prompt_tokens, event.usage.completion_tokens)
                if event.reused_from is not None:
                    self.reused_tokens += event.usage.total_tokens
                    self.calls_reused += 1
                    if usd is None:
                        self.unpriced_saved.add(model)
                    else:
                        self._saved_usd += usd
                    return None
                self.spent_tokens += event.usage.total_tokens
                self.calls_made += 1
                self.latency_ms += event.latency_ms
                if usd is None:
                    self.unpriced_spent.add(model)
                else:
                    self._spent_usd += usd
                return event.usage.total_tokens, usd
        return None


_FOLDED = frozenset({RunStarted, SettingsChanged, RunForked, LLMCallRequested, LLMCallAnswered})


class SharedBudget:
    """Limits over the sum of what several runs spend from now on (a sweep's budget); thread-safe.

    It also keeps the tally a sweep's progress line shows: calls made and reused, tokens, USD.
    """

    def __init__(self, *, usd: float | None = None, tokens: int | None = None):
        self.usd_limit, self.token_limit = usd, tokens
        self._lock = threading.Lock()
        self.spent_tokens = self.calls_made = self.calls_reused = 0
        self.spent_usd = 0.0
        self.unpriced: set[str] = set()

    def add(self, tokens: int, usd: float | None, model: str = "") -> None:
        with self._lock:
            self.spent_tokens += tokens
            self.calls_made += 1
            if usd is None:
                self.unpriced.add(model)
            else:
                self.spent_usd += usd

    def reused(self) -> None:
        with self._lock:
            self.calls_reused += 1

    def reached(self) -> tuple[str, float, float] | None:
        """``(budget, limit, spent)`` of the first limit reached, else ``None``."""
        with self._lock:
            if self.token_limit is not None and self.spent_tokens >= self.token_limit:
                return "tokens", self.token_limit, self.spent_tokens
            if self.usd_limit is not None and (self.unpriced or self.spent_usd >= self.usd_limit):
                return "usd", self.usd_limit, self.spent_usd
        return None


class Budget:
    """The orchestrator's check before a request is sent: the run's limits, then a shared one."""

    def __init__(self, prices: PriceTable | None = None, shared: SharedBudget | None = None):
        self.spending = Spending(prices)
        self.shared = shared

    def load(self, event: Event) -> None:
        """Fold an event the run already had (not counted again in a shared budget)."""
        self.spending.observe(event)

    def observe(self, event: Event) -> None:
        """Fold a new event of the run; a live answer's cost also goes to the shared budget."""
        cost = self.spending.observe(event)
        if self.shared is None:
            return
        if cost is not None:
            assert isinstance(event, LLMCallAnswered)
            self.shared.add(cost[0], cost[1], self.spending.models.get(event.call_id) or event.model)
        elif isinstance(event, LLMCallAnswered):
            self.shared.reused()

    def stop(self, call_id: str, step: str) -> list[Event] | None:
        """The events that stop the run instead of sending ``call_id``, or ``None`` to send it."""
        s = self.spending
        reached: tuple[str, float, float, str] | None = None
        if s.budget_tokens is not None and s.spent_tokens >= s.budget_tokens:
            reached = ("tokens", s.budget_tokens, s.spent_tokens, "run")
        elif s.budget_usd is not None and (s.unpriced_spent or s._spent_usd >= s.budget_usd):
            reached = ("usd", s.budget_usd, s._spent_usd, "run")
        elif self.shared is not None and (found := self.shared.reached()) is not None:
            reached = (*found, "sweep")
        if reached is None:
            return None
        budget, limit, spent, scope = reached
        unpriced = s.unpriced_spent if scope == "run" else (self.shared.unpriced if self.shared else set())
        whose = "the run's" if scope == "run" else "the sweep's"
        again = "resume the run" if scope == "run" else "run the sweep again"
        if budget == "usd" and unpriced:
            reason = (f"{whose} USD budget cannot be checked: no price for {', '.join(sorted(unpriced))}; "
                      f"add it to the config file's [prices] table")
        elif budget == "usd":
            reason = (f"budget reached: {whose} spend ${spent:,.4f} reached its --budget-usd of ${limit:,.4f} "
                      f"before call {call_id}; {again} with a higher --budget-usd to continue")
        else:
            reason = (f"budget reached: {whose} {spent:,.0f} tokens reached its --budget-tokens of {limit:,.0f} "
                      f"before call {call_id}; {again} with a higher --budget-tokens to continue")
        return [BudgetReached(budget=budget, limit=limit, spent=spent, call_id=call_id, scope=scope),
                RunFailed(reason=reason, step=step)]


def validate_budget(usd: float | None = None, tokens: int | None = None, sample: int | None = None) -> None:
    """Raise ``ValueError`` for a budget that could never let a call through, or a bad sample index."""
    if usd is not None and not (usd > 0 and usd != float("inf")):
        raise ValueError(f"a USD budget must be a positive amount, not {usd}")
    if tokens is not None and tokens < 1:
        raise ValueError(f"a token budget must be a positive number of tokens, not {tokens}")
    if sample is not None and sample < 1:
        raise ValueError(f"a sample index starts at 1, not {sample}")
