"""The event vocabulary: frozen, tagged msgspec structs, each with a version.

A field's type never changes; new fields get defaults. A change that a default cannot
express bumps ``VERSION`` and adds an upcaster in ``codec.py``, so old logs still read.
``recorded_at`` is kept by the store, not here: deciders never see a clock.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from .payloads import Findings, Review


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True, gc=False):
    # gc=False: events are immutable trees decoded from JSON and cannot form cycles; keeping
    # them out of the cycle collector makes folding a 100,000-event run linear.
    VERSION: ClassVar[int] = 1


# --- values carried by events -------------------------------------------------------


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one agent calls its model. ``system_prompt=None`` means the role's default."""

    model: str
    temperature: float
    system_prompt: str | None = None
    max_tokens: int | None = None


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    name: str
    arguments: str


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool as the model sees it: a name, what it is for, JSON-schema parameters.

    The callable is never recorded: a process registers it under ``name``.
    """

    name: str
    description: str
    parameters: dict[str, Any]


class CallRef(msgspec.Struct, frozen=True):
    """Where a reused answer was first recorded."""

    run_id: str
    seq: int
    call_id: str


# --- run lifecycle ---------------------------------------------------------------


class RunStarted(Event, frozen=True):
    """A run's first event: the task, the pipeline, and every agent's model and parameters.

    Version 2 replaced v1's single ``model`` with per-agent ``agents``.
    """

    VERSION: ClassVar[int] = 2
    task: str
    pipeline: str
    agents: dict[str, AgentConfig]
    max_iterations: int
    threshold: int
    # A re-review run names the run whose drafts it scores.
    parent_run_id: str | None = None
    research: Literal["single", "parallel"] = "single"
    # The tools offered to each agent, by agent name.
    tools: dict[str, list[ToolSpec]] = {}
    # Where a person decides on the draft: never, before the run finishes, or after each review.
    approval: Literal["never", "final", "each-review"] = "never"
    # Spending limits of the run, checked before each request is sent (None: no limit).
    budget_usd: float | None = None
    budget_tokens: int | None = None
    # Which fresh sample of the same requests this run is: sample k > 1 is recorded in every
    # request (so its hash differs from sample 1's, whose requests are as they always were).
    sample: int = 1


class RunForked(Event, frozen=True):
    """This stream's events up to ``parent_seq`` are a copy of the parent's; it goes on from here."""

    parent_run_id: str
    parent_seq: int


class RunResumed(Event, frozen=True):
    """A process picked the run up again after it stopped (crash, Ctrl-C, or failure)."""

    previous_seq: int


class RunQueued(Event, frozen=True):
    """The run waits in the queue for a worker (``agentlog worker``) to drive it; appended
    with the events that start it, in the same transaction."""


class RunClaimed(Event, frozen=True):
    """A worker took the run from the queue (or over from a worker whose lease expired) and
    drives it from here, under its lease."""

    worker: str  # host:pid
    previous_seq: int


class AgentReconfigured(Event, frozen=True):
    """An agent's model or parameters changed (fork or resume override). ``None`` keeps a value."""

    agent: str
    model: str | None = None
    temperature: float | None = None
    system_prompt: str | None = None
    max_tokens: int | None = None


def apply_reconfiguration(config: AgentConfig, event: AgentReconfigured) -> AgentConfig:
    """``config`` with the values ``event`` sets; every ``None`` in the event keeps the old value."""
    changed = {name: getattr(event, name) for name in AgentConfig.__struct_fields__ if getattr(event, name) is not None}
    return msgspec.structs.replace(config, **changed)


class SettingsChanged(Event, frozen=True):
    max_iterations: int | None = None
    threshold: int | None = None
    approval: Literal["never", "final", "each-review"] | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    sample: int | None = None


class RunFinished(Event, frozen=True):
    reason: Literal["approved", "max_iterations", "score_plateau", "reviewed"]
    iterations: int
    score: int | None = None


class RunFailed(Event, frozen=True):
    reason: str
    step: str | None = None
    # True when the cause was transient (rate limits, outages): resume tries again.
    retryable: bool = False


class BudgetReached(Event, frozen=True):
    """The run's spend reached a budget, so call ``call_id`` was not sent; a ``RunFailed`` follows.

    ``budget`` is ``usd`` or ``tokens``; ``scope`` is ``run`` (the run's own budget) or
    ``sweep`` (a sweep's budget, shared by its runs). Resuming with a higher budget sends it.
    """

    budget: str
    limit: float
    spent: float
    call_id: str
    scope: str = "run"


class SweepVariant(msgspec.Struct, frozen=True, kw_only=True):
    """One arm of a sweep: the overrides its runs get, and the label it is shown by."""

    label: str
    models: dict[str, str] = {}
    temperatures: dict[str, float] = {}
    max_iterations: int | None = None
    threshold: int | None = None


class SweepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a sweep runs: recorded runs branched at ``at`` (or fresh ``tasks``), per variant
    and sample. Its canonical hash is the sweep's id, so running it again finds its runs."""

    runs: list[str] = []
    tasks: list[str] = []
    base_model: str = ""  # fresh tasks: the model of every agent a variant does not set
    at: str = ""
    variants: list[SweepVariant]
    samples: int = 1


class SweepMember(Event, frozen=True):
    """This run is a member of sweep ``sweep_id``: ``variant`` of ``parent_run_id`` (a fork) or of
    task ``task_index`` of the spec (a fresh run), sample ``sample``. Written in the same batch
    as the run's first events, so a sweep is a fold of its members' events: no table of its own."""

    sweep_id: str
    spec: SweepSpec
    variant: str
    sample: int = 1
    parent_run_id: str | None = None
    task_index: int | None = None


# --- model calls -------------------------------------------------------------------


class LLMCallRequested(Event, frozen=True):
    """The intent of a call, appended before the HTTP request leaves.

    ``request`` holds everything that determines the completion and nothing secret;
    ``request_hash`` is its fingerprint for reuse.
    """

    call_id: str
    agent: str
    step: str
    attempt: int
    request: dict[str, Any]
    request_hash: str
    # 0 for the first call of an attempt; n for the call after its n-th round of tool results.
    round: int = 0


class LLMCallAnswered(Event, frozen=True):
    call_id: str
    agent: str
    request_hash: str
    content: str
    tool_calls: list[ToolCall] = []
    usage: Usage = Usage()
    latency_ms: float = 0.0
    model: str = ""
    reused_from: CallRef | None = None


class LLMCallFailed(Event, frozen=True):
    """One failed attempt at a call. ``gave_up`` marks the last one: the call will not be retried."""

    call_id: str
    agent: str
    attempt: int
    error_kind: str
    message: str
    retryable: bool
    gave_up: bool = False


class OutputRejected(Event, frozen=True):
    """An answer failed its schema; the agent is asked again with the reason, or the run fails."""

    call_id: str
    agent: str
    step: str
    reason: str


class ToolInvoked(Event, frozen=True):
    """A tool call of answer ``call_id`` is about to run (appended before it runs)."""

    call_id: str
    tool_call_id: str
    name: str
    arguments: str


class ToolReturned(Event, frozen=True):
    """A tool's result, or the error text the model is given when it raised (``is_error``)."""

    call_id: str
    tool_call_id: str
    name: str
    result: str
    is_error: bool = False
    # Set when the result was reused from a run this one was forked from; the tool did not run.
    reused_from: CallRef | None = None


# --- pipeline outcomes -------------------------------------------------------------


class ResearchPartReady(Event, frozen=True):
    """One researcher's validated findings in parallel research (``part``: facts or counter).

    ``FindingsReady`` follows once every part is in, with the merged findings.
    """

    part: str
    findings: Findings
    call_id: str


class FindingsReady(Event, frozen=True):
    findings: Findings
    call_id: str


class DraftReady(Event, frozen=True):
    iteration: int
    draft: str
    call_id: str
    # A re-review run copies drafts from another run and says from where.
    source: CallRef | None = None


class ReviewScored(Event, frozen=True):
    iteration: int
    review: Review
    call_id: str


# --- a person in the loop ------------------------------------------------------------


class ApprovalRequested(Event, frozen=True):
    """The run waits for a person to decide on draft ``iteration``; nothing happens until they do.

    ``point`` is ``final`` when the loop would finish with this draft, ``review`` when it would
    go on (asked only with ``approval = "each-review"``).
    """

    iteration: int
    point: Literal["final", "review"]


class ApprovalDecided(Event, frozen=True):
    """A person's decision on draft ``iteration``: an input to the run, like a model's answer.

    ``approve`` ends the run with the draft; ``edit`` makes ``draft`` (the person's version)
    the next draft; ``reject`` has the writer revise with ``note`` as the first point to address.
    ``by`` names who decided; when is the store's ``recorded_at``.
    """

    iteration: int
    decision: Literal["approve", "edit", "reject"]
    by: str
    note: str = ""
    draft: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RunStarted,
        RunForked,
        RunResumed,
        RunQueued,
        RunClaimed,
        AgentReconfigured,
        SettingsChanged,
        RunFinished,
        RunFailed,
        BudgetReached,
        SweepMember,
        LLMCallRequested,
        LLMCallAnswered,
        LLMCallFailed,
        OutputRejected,
        ToolInvoked,
        ToolReturned,
        ResearchPartReady,
        FindingsReady,
        DraftReady,
        ReviewScored,
        ApprovalRequested,
        ApprovalDecided,
    )
}

TERMINAL_TYPES = (RunFinished, RunFailed)
