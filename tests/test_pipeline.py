"""The content decider on its own: pure, deterministic, bounded."""

from __future__ import annotations

import msgspec
import pytest

from agentlog.actors import agent_configs
from agentlog.events import (
    DraftReady,
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
    RunStarted,
    request_hash,
)
from agentlog.pipelines import CallModel, ContentPipeline, Record, fold
from agentlog.pipelines.validate import parse_json, strip_fences

P = ContentPipeline()
FINDINGS = Findings(key_areas=["Scaling"], facts=[], misconceptions=[], sources=["https://kubernetes.io"])


def review(score: int) -> Review:
    return Review(score=score, approved=score >= 8, issues=[f"issue at {score}"], missed_topics=[],
                  suggestions=["be concrete"], summary=f"score {score}")


def started(**kw) -> RunStarted:
    return RunStarted(task="Explain HPA", pipeline="content", agents=agent_configs("m"),
                      max_iterations=kw.get("max_iterations", 3), threshold=kw.get("threshold", 8))


def answer(cmd: CallModel, content: str) -> list:
    return [
        LLMCallRequested(call_id=cmd.call_id, agent=cmd.agent, step=cmd.step, attempt=cmd.attempt,
                         request=cmd.request, request_hash=request_hash(cmd.request)),
        LLMCallAnswered(call_id=cmd.call_id, agent=cmd.agent, request_hash=request_hash(cmd.request), content=content),
    ]


def drive(events: list, replies: dict[str, list[str]]) -> list:
    """Feed the decider canned replies per agent until it stops asking; return all events."""
    state = fold(P, events)
    for _ in range(100):
        commands = P.decide(state)
        if not commands:
            return events
        [cmd] = commands
        new = answer(cmd, replies[cmd.agent].pop(0)) if isinstance(cmd, CallModel) else [cmd.event]
        events = events + new
        state = fold(P, new, state)
    raise AssertionError("decider did not stop")


def j(x) -> str:
    return msgspec.json.encode(x).decode()


def test_first_decision_is_the_research_call_with_schema():
    [cmd] = P.decide(fold(P, [started()]))
    assert isinstance(cmd, CallModel)
    assert (cmd.call_id, cmd.agent, cmd.step, cmd.attempt) == ("research/1", "researcher", "research", 1)
    assert cmd.request["model"] == "m" and cmd.request["temperature"] == 0.2
    assert cmd.request["response_format"]["json_schema"]["name"] == "Findings"
    assert "Task: Explain HPA" in cmd.request["messages"][1]["content"]


def test_decide_is_deterministic_and_does_not_mutate_state():
    state = fold(P, [started()])
    first, second = P.decide(state), P.decide(state)
    assert first == second
    assert state.calls == {}


def test_loop_stops_when_approved():
    events = drive([started()], {"researcher": [j(FINDINGS)], "writer": ["# d1", "# d2"],
                                 "reviewer": [j(review(6)), j(review(9))]})
    assert events[-1] == RunFinished(reason="approved", iterations=2, score=9)


def test_loop_is_bounded_by_max_iterations():
    events = drive([started(max_iterations=2)], {"researcher": [j(FINDINGS)], "writer": ["# a", "# b"],
                                                 "reviewer": [j(review(5)), j(review(6))]})
    assert events[-1] == RunFinished(reason="max_iterations", iterations=2, score=6)


def test_a_score_that_does_not_improve_ends_the_loop():
    events = drive([started(max_iterations=5)], {"researcher": [j(FINDINGS)], "writer": ["# a", "# b"],
                                                 "reviewer": [j(review(6)), j(review(6))]})
    assert events[-1] == RunFinished(reason="score_plateau", iterations=2, score=6)


def test_writer_sees_only_findings_previous_draft_and_latest_review():
    events = drive([started(max_iterations=3)], {"researcher": [j(FINDINGS)], "writer": ["# first", "# second", "# third"],
                                                 "reviewer": [j(review(5)), j(review(6)), j(review(9))]})
    writes = [e for e in events if isinstance(e, LLMCallRequested) and e.agent == "writer"]
    third = writes[2].request["messages"][1]["content"]
    assert "# second" in third and "# first" not in third  # no history beyond the previous draft
    assert "issue at 6" in third and "issue at 5" not in third  # only the latest review


def test_reviewer_sees_its_earlier_reviews():
    events = drive([started()], {"researcher": [j(FINDINGS)], "writer": ["# a", "# b"],
                                 "reviewer": [j(review(5)), j(review(9))]})
    reviews = [e for e in events if isinstance(e, LLMCallRequested) and e.agent == "reviewer"]
    assert "Earlier review" not in reviews[0].request["messages"][1]["content"]
    second = reviews[1].request["messages"][1]["content"]
    assert "### Earlier review 1" in second and "issue at 5" in second and "# b" in second


def test_fenced_json_is_accepted():
    assert strip_fences('```json\n{"a": 1}\n```') == '{"a": 1}'
    events = drive([started()], {"researcher": ["```json\n" + j(FINDINGS) + "\n```"], "writer": ["# a"],
                                 "reviewer": [j(review(9))]})
    assert any(isinstance(e, FindingsReady) and e.findings == FINDINGS for e in events)


def test_invalid_output_is_reasked_with_the_error_then_accepted():
    events = drive([started()], {"researcher": ["not json", '{"key_areas": []}', j(FINDINGS)],
                                 "writer": ["# a"], "reviewer": [j(review(9))]})
    rejected = [e for e in events if isinstance(e, OutputRejected)]
    assert [r.call_id for r in rejected] == ["research/1", "research/2"]
    assert "not valid JSON" in rejected[0].reason and "Findings" in rejected[1].reason
    retry = next(e for e in events if isinstance(e, LLMCallRequested) and e.call_id == "research/2")
    assert retry.request["messages"][-2] == {"role": "assistant", "content": "not json"}
    assert rejected[0].reason in retry.request["messages"][-1]["content"]
    assert isinstance(events[-1], RunFinished)


def test_three_invalid_outputs_fail_the_run_with_a_reason():
    events = drive([started()], {"researcher": ["nope", "nope", "nope"]})
    assert isinstance(events[-1], RunFailed)
    assert events[-1].step == "research" and "3 attempts" in events[-1].reason
    assert not any(isinstance(e, FindingsReady) for e in events)  # nothing invalid went downstream


def test_out_of_range_score_is_rejected_not_passed_on():
    bad = j(review(9)).replace('"score":9', '"score":11')
    events = drive([started()], {"researcher": [j(FINDINGS)], "writer": ["# a"], "reviewer": [bad, j(review(9))]})
    assert any(isinstance(e, OutputRejected) and e.agent == "reviewer" for e in events)
    assert [e.review.score for e in events if isinstance(e, ReviewScored)] == [9]


def test_a_call_that_gave_up_fails_the_run_and_keeps_retryable():
    state = fold(P, [started()])
    [cmd] = P.decide(state)
    fold(P, [answer(cmd, "")[0], LLMCallFailed(call_id=cmd.call_id, agent="researcher", attempt=5,
                                                 error_kind="rate_limit", message="429", retryable=True,
                                                 gave_up=True)], state)
    [decision] = P.decide(state)
    assert isinstance(decision, Record) and isinstance(decision.event, RunFailed)
    assert decision.event.retryable and "rate_limit" in decision.event.reason


def test_an_unanswered_call_is_asked_again_with_the_same_id():
    state = fold(P, [started()])
    [cmd] = P.decide(state)
    fold(P, [answer(cmd, "")[0]], state)  # requested, never answered (crash)
    assert P.decide(state) == [cmd]


def test_parse_json_reports_schema_errors():
    assert "not valid JSON" in parse_json("{", Findings)
    assert "Findings" in parse_json('{"key_areas": ["a"]}', Findings)


@pytest.mark.parametrize("score,expected", [(8, "approved"), (7, None)])
def test_threshold_is_inclusive(score, expected):
    state = fold(P, [started(), FindingsReady(findings=FINDINGS, call_id="r"),
                     DraftReady(iteration=1, draft="d", call_id="w"),
                     ReviewScored(iteration=1, review=review(score), call_id="v")])
    decision = P.decide(state)[0]
    if expected:
        assert decision == Record(RunFinished(reason="approved", iterations=1, score=score))
    else:
        assert isinstance(decision, CallModel) and decision.step == "write-2"
