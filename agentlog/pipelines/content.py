"""The content pipeline as a decider: research -> write -> review, looped.

``evolve(state, event)`` folds one event into the state (in place, for speed; it returns
the state). ``decide(state)`` is pure: no clock, no randomness, call ids derived from the
state, so replaying the same events always yields the same decisions. The same decider
drives re-review runs, whose drafts were copied in from another run.
"""

from __future__ import annotations

from typing import Any

from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    DraftReady,
    Event,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    Review,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunResumed,
    RunStarted,
    SettingsChanged,
)

from . import prompts
from .commands import CallModel, Command, Record
from .validate import parse_json, parse_markdown

MAX_ATTEMPTS = 3  # one ask and at most two re-asks per step


class Call:
    """What the log says about one model call."""

    __slots__ = ("call_id", "step", "agent", "attempt", "request", "answer", "gave_up", "rejected")

    def __init__(self, event: LLMCallRequested):
        self.call_id, self.step, self.agent = event.call_id, event.step, event.agent
        self.attempt, self.request = event.attempt, event.request
        self.answer: LLMCallAnswered | None = None
        self.gave_up: LLMCallFailed | None = None
        self.rejected: str | None = None


class ContentState:
    __slots__ = (
        "pipeline", "task", "agents", "max_iterations", "threshold", "findings", "drafts",
        "reviews", "calls", "step_calls", "finished", "failed", "source_run",
    )

    def __init__(self) -> None:
        self.pipeline = ""
        self.task = ""
        self.agents: dict[str, AgentConfig] = {}
        self.max_iterations = 0
        self.threshold = 0
        self.findings: Findings | None = None
        self.drafts: list[str] = []
        self.reviews: list[Review] = []
        self.calls: dict[str, Call] = {}
        self.step_calls: dict[str, list[str]] = {}
        self.finished: RunFinished | None = None
        self.failed: RunFailed | None = None
        self.source_run: str | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None or self.failed is not None


class ContentPipeline:
    """The seed's pipeline. ``name`` is what ``RunStarted.pipeline`` records."""

    name = "content"
    roles = ("researcher", "writer", "reviewer")

    def initial_state(self) -> ContentState:
        return ContentState()

    # --- evolve --------------------------------------------------------------------

    def evolve(self, state: ContentState, event: Event) -> ContentState:
        match event:
            case RunStarted():
                state.pipeline, state.task = event.pipeline, event.task
                state.agents = dict(event.agents)
                state.max_iterations, state.threshold = event.max_iterations, event.threshold
                state.source_run = event.parent_run_id
            case LLMCallRequested():
                state.calls[event.call_id] = Call(event)
                state.step_calls.setdefault(event.step, []).append(event.call_id)
            case LLMCallAnswered():
                call = state.calls[event.call_id]
                call.answer, call.gave_up = event, None
            case LLMCallFailed(gave_up=True):
                state.calls[event.call_id].gave_up = event
            case OutputRejected():
                state.calls[event.call_id].rejected = event.reason
            case FindingsReady():
                state.findings = event.findings
            case DraftReady():
                state.drafts.append(event.draft)
            case ReviewScored():
                state.reviews.append(event.review)
            case AgentReconfigured():
                old = state.agents[event.agent]
                state.agents[event.agent] = AgentConfig(
                    model=event.model if event.model is not None else old.model,
                    temperature=event.temperature if event.temperature is not None else old.temperature,
                    system_prompt=event.system_prompt if event.system_prompt is not None else old.system_prompt,
                    max_tokens=event.max_tokens if event.max_tokens is not None else old.max_tokens,
                )
            case SettingsChanged():
                if event.max_iterations is not None:
                    state.max_iterations = event.max_iterations
                if event.threshold is not None:
                    state.threshold = event.threshold
            case RunForked():
                # A fork goes on from the copied state; whether it is done is decided anew.
                state.finished = state.failed = None
            case RunResumed():
                state.failed = None
                for call in state.calls.values():
                    call.gave_up = None
            case RunFinished():
                state.finished = event
            case RunFailed():
                state.failed = event
        return state

    # --- decide --------------------------------------------------------------------

    def decide(self, state: ContentState) -> list[Command]:
        if state.done or not state.pipeline:
            return []
        if state.findings is None:
            return self._step(state, "research", "researcher", prompts.researcher_messages(state.task))
        drafts, reviews = len(state.drafts), len(state.reviews)
        if reviews < drafts:
            messages = prompts.reviewer_messages(
                state.task, state.findings, state.drafts[reviews], state.reviews[:reviews]
            )
            return self._step(state, f"review-{reviews + 1}", "reviewer", messages)
        finish = self._finish_reason(state)
        if finish is not None:
            score = state.reviews[-1].score if state.reviews else None
            return [Record(RunFinished(reason=finish, iterations=drafts, score=score))]
        previous = state.drafts[-1] if drafts else None
        review = state.reviews[-1] if reviews else None
        messages = prompts.writer_messages(state.task, state.findings, previous, review)
        return self._step(state, f"write-{drafts + 1}", "writer", messages)

    def _finish_reason(self, state: ContentState) -> str | None:
        if state.pipeline == "rereview":
            return "reviewed"
        if not state.reviews:
            return None
        last = state.reviews[-1].score
        if last >= state.threshold:
            return "approved"
        if len(state.reviews) >= state.max_iterations:
            return "max_iterations"
        if len(state.reviews) >= 2 and last <= state.reviews[-2].score:
            return "score_plateau"
        return None

    def _step(self, state: ContentState, step: str, agent: str, messages: list[dict[str, Any]]) -> list[Command]:
        """Ask for ``step``, re-ask after a rejected answer, or turn a valid answer into its outcome."""
        ids = state.step_calls.get(step)
        if not ids:
            return [self._call(state, step, agent, 1, messages)]
        call = state.calls[ids[-1]]
        if call.gave_up is not None:
            failure = call.gave_up
            return [Record(RunFailed(
                reason=f"{agent} call {call.call_id} failed after {failure.attempt} attempt(s): "
                f"{failure.error_kind}: {failure.message}",
                step=step, retryable=failure.retryable,
            ))]
        if call.answer is None:
            return [CallModel(call_id=call.call_id, agent=agent, step=step, attempt=call.attempt, request=call.request)]
        if call.rejected is not None:
            if call.attempt >= MAX_ATTEMPTS:
                return [Record(RunFailed(
                    reason=f"{agent} gave no valid output in {MAX_ATTEMPTS} attempts; last: {call.rejected}",
                    step=step,
                ))]
            retry = prompts.reask_messages(messages, call.answer.content, call.rejected)
            return [self._call(state, step, agent, call.attempt + 1, retry)]
        outcome = self._outcome(state, step, call)
        if isinstance(outcome, str):
            return [Record(OutputRejected(call_id=call.call_id, agent=agent, step=step, reason=outcome))]
        return [Record(outcome)]

    def _outcome(self, state: ContentState, step: str, call: Call) -> Event | str:
        content = call.answer.content if call.answer else ""
        if step == "research":
            findings = parse_json(content, Findings)
            return findings if isinstance(findings, str) else FindingsReady(findings=findings, call_id=call.call_id)
        iteration = int(step.rsplit("-", 1)[1])
        if step.startswith("write-"):
            draft = parse_markdown(content)
            if draft is None:
                return "the draft was empty"
            return DraftReady(iteration=iteration, draft=draft, call_id=call.call_id)
        review = parse_json(content, Review)
        return review if isinstance(review, str) else ReviewScored(iteration=iteration, review=review, call_id=call.call_id)

    def _call(self, state: ContentState, step: str, agent: str, attempt: int, messages: list[dict[str, Any]]) -> CallModel:
        config = state.agents[agent]
        system = config.system_prompt if config.system_prompt is not None else prompts.SYSTEM[agent]
        request: dict[str, Any] = {
            "model": config.model,
            "messages": [{"role": "system", "content": system}, *messages],
            "temperature": config.temperature,
        }
        if agent in prompts.RESPONSE_FORMATS:
            request["response_format"] = prompts.RESPONSE_FORMATS[agent]
        if config.max_tokens is not None:
            request["max_tokens"] = config.max_tokens
        return CallModel(call_id=f"{step}/{attempt}", agent=agent, step=step, attempt=attempt, request=request)
