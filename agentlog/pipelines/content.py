"""The content pipeline as a decider: research -> write -> review, looped.

``evolve(state, event)`` folds one event into the state (in place, for speed; it returns
the state). ``decide(state)`` is pure: no clock, no randomness, call ids derived from the
state, so replaying the same events always yields the same decisions. The same decider
drives re-review runs, whose drafts were copied in from another run.

Two optional parts of the research step live here too. Parallel research asks a facts
researcher and a counter-arguments researcher at once (two calls in one decision), records
each validated part as ``ResearchPartReady`` in whatever order they arrive, then the
merged ``FindingsReady``. The tool loop: an answer with tool calls yields an
``InvokeTool`` per call without a ``ToolReturned``; once all of a round's results are in,
the step's next call carries them (``{step}/{attempt}.{round}``), for at most
``MAX_TOOL_ROUNDS`` rounds.

A person in the loop (``RunStarted.approval``): at an approval point (the final draft, or
every reviewed draft with ``each-review``) the decider records ``ApprovalRequested`` and
then asks for nothing until an ``ApprovalDecided`` is folded in: the run is *waiting*, and
no process needs to stay alive for it. ``approve`` finishes the run; ``edit`` records the
person's version as the next draft (final at the final point, reviewed like any draft
otherwise); ``reject`` has the writer revise with the person's note first. A rejection at
the iteration limit still gets its revision; the limit then ends the loop again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from agentlog.events import (
    AgentConfig,
    AgentReconfigured,
    ApprovalDecided,
    ApprovalRequested,
    AreaFacts,
    DraftReady,
    Event,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    Review,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunResumed,
    RunStarted,
    SettingsChanged,
    ToolInvoked,
    ToolReturned,
    ToolSpec,
    apply_reconfiguration,
)

from . import prompts
from .commands import CallModel, Command, InvokeTool, Record
from .validate import parse_json, parse_markdown

MAX_ATTEMPTS = 3  # one ask and at most two re-asks per step
MAX_TOOL_ROUNDS = 5  # rounds of tool results per attempt; an answer asking for more fails the run
# Parallel research: (part, step, agent).
RESEARCH_PARTS = (("facts", "research-facts", "researcher"), ("counter", "research-counter", "counter_researcher"))


class Call:
    """What the log says about one model call."""

    __slots__ = ("call_id", "step", "agent", "attempt", "round", "request", "answer", "gave_up", "rejected",
                 "invoked", "tool_results", "reconfigured")

    def __init__(self, event: LLMCallRequested):
        self.call_id, self.step, self.agent = event.call_id, event.step, event.agent
        self.attempt, self.round, self.request = event.attempt, event.round, event.request
        self.answer: LLMCallAnswered | None = None
        self.gave_up: LLMCallFailed | None = None
        self.rejected: str | None = None
        self.invoked: set[str] = set()  # tool call ids with a ToolInvoked
        self.tool_results: dict[str, ToolReturned] = {}
        # Its agent was reconfigured while it had no answer: it is asked again of the new config.
        self.reconfigured = False


class ContentState:
    __slots__ = (
        "pipeline", "task", "agents", "max_iterations", "threshold", "findings", "drafts",
        "reviews", "calls", "step_calls", "finished", "failed", "source_run", "research", "research_parts",
        "tools", "approval", "asked", "decided", "sample", "done",
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
        self.research = "single"
        self.research_parts: dict[str, ResearchPartReady] = {}
        self.tools: dict[str, list[ToolSpec]] = {}
        self.approval = "never"
        self.asked: dict[int, str] = {}  # draft iteration -> approval point ("final" or "review")
        self.decided: dict[int, ApprovalDecided] = {}  # draft iteration -> the person's decision
        self.sample = 1
        # Whether the run has finished or failed (``finished`` or ``failed`` set): kept by
        # ``evolve`` as it sets them, since the orchestrator asks after every event.
        self.done = False

    @property
    def waiting(self) -> int | None:
        """The draft a person was asked about and has not decided on yet (the run waits), else ``None``."""
        n = len(self.drafts)
        if self.done or n not in self.asked or n in self.decided or len(self.reviews) < n:
            return None
        return n if approval_point(self) is not None else None


class ContentPipeline:
    """The seed's pipeline. ``name`` is what ``RunStarted.pipeline`` records."""

    name = "content"
    roles = ("researcher", "counter_researcher", "writer", "reviewer")

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
                state.research, state.tools = event.research, dict(event.tools)
                state.approval = event.approval
                state.sample = event.sample
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
            case ToolInvoked():
                state.calls[event.call_id].invoked.add(event.tool_call_id)
            case ToolReturned():
                state.calls[event.call_id].tool_results[event.tool_call_id] = event
            case ResearchPartReady():
                state.research_parts[event.part] = event
            case FindingsReady():
                state.findings = event.findings
            case DraftReady():
                state.drafts.append(event.draft)
            case ReviewScored():
                state.reviews.append(event.review)
            case AgentReconfigured():
                state.agents[event.agent] = apply_reconfiguration(state.agents[event.agent], event)
                for call in state.calls.values():
                    if call.agent == event.agent and call.answer is None:
                        call.reconfigured = True
            case SettingsChanged():
                if event.max_iterations is not None:
                    state.max_iterations = event.max_iterations
                if event.threshold is not None:
                    state.threshold = event.threshold
                if event.approval is not None:
                    state.approval = event.approval
                if event.sample is not None:
                    state.sample = event.sample
            case ApprovalRequested():
                state.asked[event.iteration] = event.point
            case ApprovalDecided():
                state.decided[event.iteration] = event
            case RunForked() | RunResumed():
                # The run goes on from here; whether it is done, and whether a call that gave
                # up is asked again, is decided anew.
                state.finished = state.failed = None
                state.done = False
                for call in state.calls.values():
                    call.gave_up = None
            case RunFinished():
                state.finished = event
                state.done = True
            case RunFailed():
                state.failed = event
                state.done = True
        return state

    # --- decide --------------------------------------------------------------------

    def decide(self, state: ContentState) -> list[Command]:
        if state.done or not state.pipeline:
            return []
        if state.findings is None:
            if state.research == "parallel":
                return self._parallel_research(state)
            return self._step(state, "research", "researcher", lambda: prompts.researcher_messages(state.task))
        drafts, reviews = len(state.drafts), len(state.reviews)
        score = state.reviews[-1].score if state.reviews else None
        if reviews < drafts:
            edit = state.decided.get(drafts - 1)
            if edit is not None and edit.decision == "edit" and state.asked.get(drafts - 1) == "final":
                # The person's version of the final draft is the final draft.
                return [Record(RunFinished(reason="approved", iterations=drafts, score=score))]
            findings = state.findings

            def messages() -> list[dict[str, Any]]:
                return prompts.reviewer_messages(state.task, findings, state.drafts[reviews], state.reviews[:reviews])

            return self._step(state, f"review-{reviews + 1}", "reviewer", messages)
        point = approval_point(state)
        if point is not None:
            decision = state.decided.get(drafts)
            if decision is None:
                if drafts in state.asked:
                    return []  # waiting for a person: nothing to do until their decision is in the log
                return [Record(ApprovalRequested(iteration=drafts, point=point))]
            if decision.decision == "approve":
                return [Record(RunFinished(reason="approved", iterations=drafts, score=score))]
            if decision.decision == "edit":
                return [Record(DraftReady(iteration=drafts + 1, draft=decision.draft or "",
                                          call_id=f"person-{drafts}"))]
            return self._write(state, note=decision.note)
        finish = self._finish_reason(state)
        if finish is not None:
            return [Record(RunFinished(reason=finish, iterations=drafts, score=score))]
        return self._write(state)

    def _write(self, state: ContentState, note: str | None = None) -> list[Command]:
        drafts = len(state.drafts)
        previous = state.drafts[-1] if drafts else None
        review = state.reviews[-1] if state.reviews else None
        findings = state.findings
        return self._step(state, f"write-{drafts + 1}", "writer",
                          lambda: prompts.writer_messages(state.task, findings, previous, review, note))

    def _parallel_research(self, state: ContentState) -> list[Command]:
        """Both researchers' steps at once; the merged findings once both parts are in."""
        commands: list[Command] = []
        for part, step, agent in RESEARCH_PARTS:
            if part in state.research_parts:
                continue
            messages = (prompts.researcher_messages if part == "facts" else prompts.counter_researcher_messages)
            task = state.task
            step_commands = self._step(state, step, agent, partial(messages, task))
            if any(isinstance(c, Record) and isinstance(c.event, RunFailed) for c in step_commands):
                return step_commands  # one researcher failing ends the run; nothing else is asked
            commands += step_commands
        if commands:
            return commands
        facts, counter = state.research_parts["facts"], state.research_parts["counter"]
        return [Record(FindingsReady(findings=merge_findings(facts.findings, counter.findings),
                                     call_id=facts.call_id))]

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

    def _step(self, state: ContentState, step: str, agent: str,
              messages: Callable[[], list[dict[str, Any]]]) -> list[Command]:
        """Ask for ``step``, re-ask after a rejected answer, or turn a valid answer into its outcome.

        ``messages`` builds the step's prompt: only a new call or a re-ask needs it (an answered
        step's outcome does not, and the orchestrator decides again after every event)."""
        ids = state.step_calls.get(step)
        if not ids:
            return [self._call(state, step, agent, 1, messages())]
        call = state.calls[ids[-1]]
        if call.reconfigured and call.answer is None:
            return [self._reask(state, call, agent)]
        if call.gave_up is not None:
            failure = call.gave_up
            return [Record(RunFailed(
                reason=f"{agent} call {call.call_id} failed after {failure.attempt} attempt(s): "
                f"{failure.error_kind}: {failure.message}",
                step=step, retryable=failure.retryable,
            ))]
        if call.answer is None:
            return [CallModel(call_id=call.call_id, agent=agent, step=step, attempt=call.attempt,
                              request=call.request, round=call.round)]
        if call.answer.tool_calls:
            return self._tool_round(state, step, agent, call)
        if call.rejected is not None:
            if call.attempt >= MAX_ATTEMPTS:
                return [Record(RunFailed(
                    reason=f"{agent} gave no valid output in {MAX_ATTEMPTS} attempts; last: {call.rejected}",
                    step=step,
                ))]
            # After tool rounds, the re-ask keeps the conversation with the tool results.
            asked = call.request["messages"][1:] if call.round else messages()
            retry = prompts.reask_messages(asked, call.answer.content, call.rejected)
            return [self._call(state, step, agent, call.attempt + 1, retry)]
        outcome = self._outcome(state, step, call)
        if isinstance(outcome, str):
            return [Record(OutputRejected(call_id=call.call_id, agent=agent, step=step, reason=outcome))]
        return [Record(outcome)]

    def _reask(self, state: ContentState, call: Call, agent: str) -> CallModel:
        """A call without an answer whose agent was reconfigured: the same conversation, asked of
        the agent's current configuration as a new attempt (unless the request did not change)."""
        attempt = call.attempt
        retry = self._call(state, call.step, agent, attempt, call.request["messages"][1:], call.round)
        if retry.request == call.request:
            return CallModel(call_id=call.call_id, agent=agent, step=call.step, attempt=call.attempt,
                             request=call.request, round=call.round)
        while retry.call_id in state.calls:
            attempt += 1
            retry = self._call(state, call.step, agent, attempt, call.request["messages"][1:], call.round)
        return retry

    def _tool_round(self, state: ContentState, step: str, agent: str, call: Call) -> list[Command]:
        """Run the answer's tool calls that have no result yet; then ask again with the results."""
        answer = call.answer
        assert answer is not None
        if call.round >= MAX_TOOL_ROUNDS:
            return [Record(RunFailed(
                reason=f"{agent}'s tool loop did not converge: call {call.call_id} asked for tools again "
                f"after {MAX_TOOL_ROUNDS} rounds of tool results",
                step=step,
            ))]
        tool_calls = list({c.id: c for c in answer.tool_calls}.values())
        pending = [c for c in tool_calls if c.id not in call.tool_results]
        if pending:
            return [InvokeTool(call_id=call.call_id, tool_call_id=c.id, name=c.name, arguments=c.arguments,
                               agent=agent) for c in pending]
        results = [call.tool_results[c.id] for c in tool_calls]
        messages = [*call.request["messages"][1:], *prompts.tool_round_messages(answer.content, tool_calls, results)]
        return [self._call(state, step, agent, call.attempt, messages, call.round + 1)]

    def _outcome(self, state: ContentState, step: str, call: Call) -> Event | str:
        content = call.answer.content if call.answer else ""
        if step.startswith("research"):
            findings = parse_json(content, Findings)
            if isinstance(findings, str):
                return findings
            if step == "research":
                return FindingsReady(findings=findings, call_id=call.call_id)
            part = next(p for p, s, _ in RESEARCH_PARTS if s == step)
            return ResearchPartReady(part=part, findings=findings, call_id=call.call_id)
        iteration = int(step.rsplit("-", 1)[1])
        if step.startswith("write-"):
            draft = parse_markdown(content)
            if draft is None:
                return "the draft was empty"
            return DraftReady(iteration=iteration, draft=draft, call_id=call.call_id)
        review = parse_json(content, Review)
        return review if isinstance(review, str) else ReviewScored(iteration=iteration, review=review, call_id=call.call_id)

    def _call(self, state: ContentState, step: str, agent: str, attempt: int, messages: list[dict[str, Any]],
              round: int = 0) -> CallModel:
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
        if state.tools.get(agent):
            request["tools"] = prompts.tools_param(state.tools[agent])
        if state.sample > 1:  # a fresh sample is another request; sample 1 hashes as requests always did
            request["sample"] = state.sample
        call_id = f"{step}/{attempt}" if round == 0 else f"{step}/{attempt}.{round}"
        return CallModel(call_id=call_id, agent=agent, step=step, attempt=attempt, request=request, round=round)


def finish_reason(state: ContentState) -> str | None:
    """Why the loop would end now, with every draft reviewed; ``None`` while it goes on."""
    return ContentPipeline._finish_reason(_CONTENT, state)


def approval_point(state: ContentState) -> str | None:
    """Whether a person decides on the current, reviewed draft: ``final``, ``review``, or ``None``."""
    if state.approval == "never" or state.pipeline == "rereview" or not state.drafts:
        return None
    if len(state.reviews) < len(state.drafts):
        return None
    point = "final" if finish_reason(state) is not None else "review"
    if point == "review" and state.approval != "each-review":
        return None
    # A decision already taken at a point keeps its point (a later setting change does not reopen it).
    return state.asked.get(len(state.drafts), point)


_CONTENT = ContentPipeline()


def merge_findings(facts: Findings, counter: Findings) -> Findings:
    """The facts researcher's findings, then what the counter researcher adds (no duplicates).

    The order is fixed (facts first) whatever order the parts arrived in.
    """
    by_area: dict[str, list[str]] = {}
    for item in (*facts.facts, *counter.facts):
        known = by_area.setdefault(item.area, [])
        known += [f for f in item.facts if f not in known]
    return Findings(
        key_areas=list(dict.fromkeys([*facts.key_areas, *counter.key_areas])),
        facts=[AreaFacts(area=area, facts=items) for area, items in by_area.items()],
        misconceptions=list(dict.fromkeys([*facts.misconceptions, *counter.misconceptions])),
        sources=list(dict.fromkeys([*facts.sources, *counter.sources])),
    )
