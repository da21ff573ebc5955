"""In-process models and the scripted test double, used ONLY through the public API (``from agentlog import``)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from agentlog import (
    Completion,
    Findings,
    FunctionModel,
    Gateway,
    ModelRequest,
    ModelUnavailable,
    Overrides,
    RetryPolicy,
    Review,
    ScriptedModel,
    SQLiteStore,
    SweepSpec,
    SweepVariant,
    agent_configs,
    fork,
    load_run_config,
    plan_sweep,
    resume,
    run,
    run_sweep,
    start_rereview,
)

TASK = "Explain how Kubernetes horizontal pod autoscaling works"
FINDINGS = Findings(key_areas=["Scaling"], facts=[{"area": "Scaling", "facts": ["HPA scales pods on metrics."]}],
                    misconceptions=["HPA scales nodes."], sources=["https://kubernetes.io/docs"])


def review(score: int) -> Review:
    return Review(score=score, approved=score >= 8, issues=[] if score >= 8 else ["too vague"], missed_topics=[],
                  suggestions=[], summary=f"score {score}")


def script(**extra: object) -> dict[str, object]:
    return {"researcher": FINDINGS, "writer": ["# HPA\n\nDraft one.", "# HPA\n\nDraft two."],
            "reviewer": {"review-1": review(6), "review-2": review(9)}, **extra}


def events(store: SQLiteStore, run_id: str) -> list:
    return [s.event for s in store.read(run_id)]


def of_type(store: SQLiteStore, run_id: str, name: str) -> list:
    return [s.event for s in store.read(run_id) if s.type == name]


def quick_gateway(**kwargs: object) -> Gateway:
    """No waiting between retries, so the tests stay fast."""
    return Gateway(retry=RetryPolicy(max_attempts=kwargs.pop("max_attempts", 3), initial_wait=0.0, max_wait=0.0),
                   sleep=lambda seconds: None, **kwargs)


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "log.db")
    yield s
    s.close()


def test_a_scripted_model_drives_a_run_answering_by_agent_and_step(store):
    model = ScriptedModel(script())
    summary = run(store, TASK, models=model)

    assert (summary.status, summary.score, summary.iterations) == ("finished", 9, 2)
    assert model.call_count == 5
    assert [(c.agent, c.step, c.attempt, c.call_id) for c in model.calls] == [
        ("researcher", "research", 1, "research/1"), ("writer", "write-1", 1, "write-1/1"),
        ("reviewer", "review-1", 1, "review-1/1"), ("writer", "write-2", 1, "write-2/1"),
        ("reviewer", "review-2", 1, "review-2/1")]
    assert {c.run_id for c in model.calls} == {summary.run_id}
    # The writer of round 2 was shown the first review's issues: the prompt is the recorded one.
    second = model.calls_for("writer", "write-2")[0]
    assert "too vague" in second.prompt and second.parameters["temperature"] == 0.6
    assert model.calls_for("reviewer")[0].schema_name == "Review" and model.calls_for("writer")[0].schema_name is None
    # Recorded as a remote model's answers are: the intent first, then the answer, under the model's name.
    types = [type(e).__name__ for e in events(store, summary.run_id)]
    assert types[1:4] == ["LLMCallRequested", "LLMCallAnswered", "FindingsReady"]
    requested = of_type(store, summary.run_id, "LLMCallRequested")
    assert {r.request["model"] for r in requested} == {"scripted"}
    # Who asked travels beside the request, not inside it: nothing of the context is recorded in it.
    assert all(set(r.request) <= {"model", "messages", "temperature", "response_format"} for r in requested)
    assert of_type(store, summary.run_id, "DraftReady")[-1].draft.startswith("# HPA\n\nDraft two.")


def test_an_invalid_answer_is_reasked_as_the_next_attempt(store):
    model = ScriptedModel(script(reviewer={"review-1": ["this is not JSON", review(9)]}))
    summary = run(store, TASK, models=model)

    assert summary.status == "finished" and summary.score == 9
    assert [(c.step, c.attempt) for c in model.calls_for("reviewer")] == [("review-1", 1), ("review-1", 2)]
    assert len(of_type(store, summary.run_id, "OutputRejected")) == 1


def test_a_transient_failure_is_retried_by_the_gateways_policy(store):
    def flaky(request: ModelRequest) -> Completion:
        if request.agent == "researcher" and request.retry == 0:
            raise ModelUnavailable("warming up")
        return ScriptedModel(script()).complete(request)

    model = FunctionModel(flaky, name="flaky")
    gateway = quick_gateway(models=model)
    try:
        summary = run(store, TASK, agents=agent_configs("flaky"), gateway=gateway, max_iterations=1)
    finally:
        gateway.close()

    assert summary.status == "finished"
    failed = of_type(store, summary.run_id, "LLMCallFailed")
    assert [(f.agent, f.attempt, f.error_kind, f.message, f.retryable, f.gave_up) for f in failed] == [
        ("researcher", 1, "unavailable", "warming up", True, False)]
    answered = of_type(store, summary.run_id, "LLMCallAnswered")
    assert answered[0].model == "flaky" and answered[0].latency_ms > 0


def test_a_model_that_changes_its_request_changes_nothing_recorded_nor_asked_later(store):
    def answers(request: ModelRequest) -> Completion:
        return ScriptedModel(script()).complete(request)

    def vandal(request: ModelRequest) -> Completion:
        answer = answers(request)
        for message in request.messages:  # every container it was given, changed in place
            message["content"] = "vandalised"
            message["extra"] = [1]
        request.messages.append({"role": "user", "content": "more"})
        request.parameters["temperature"] = 99
        if request.response_format is not None:
            request.response_format["json_schema"]["schema"]["properties"].clear()
        return answer

    vandalised = run(store, TASK, models=FunctionModel(vandal, name="same"))
    plain = run(store, TASK, models=FunctionModel(answers, name="same"))

    assert vandalised.status == plain.status == "finished"
    asked = [e.request for e in of_type(store, vandalised.run_id, "LLMCallRequested")]
    assert asked == [e.request for e in of_type(store, plain.run_id, "LLMCallRequested")]
    assert asked[0]["response_format"]["json_schema"]["schema"]["properties"]  # the run's own schema is intact


def test_any_other_exception_fails_the_call_at_once_and_the_run_resumes(store):
    broken = ScriptedModel(script(writer=ValueError("the writer is broken")))
    summary = run(store, TASK, models=broken)

    assert summary.status == "failed"
    [failed] = of_type(store, summary.run_id, "LLMCallFailed")
    assert (failed.error_kind, failed.retryable, failed.gave_up) == ("model_error", False, True)
    assert failed.message == "ValueError: the writer is broken"

    fixed = ScriptedModel(script())
    resumed = resume(store, summary.run_id, models=fixed).wait(timeout=30)
    assert resumed.status == "finished"
    # Nothing answered before the failure is asked again.
    assert [c.agent for c in fixed.calls] == ["writer", "reviewer", "writer", "reviewer"]


def test_a_model_returning_the_wrong_type_fails_the_call_with_a_clear_message(store):
    model = FunctionModel(lambda request: {"content": "a dict is not a completion"}, name="sloppy")
    summary = run(store, TASK, models=model)

    assert summary.status == "failed"
    [failed] = of_type(store, summary.run_id, "LLMCallFailed")
    assert failed.error_kind == "bad_response" and not failed.retryable
    assert failed.message == "model 'sloppy' returned a dict, not a Completion or a str"
    [outcome] = of_type(store, summary.run_id, "RunFailed")
    assert "returned a dict" in outcome.reason


def test_an_invalid_completion_is_named_field_by_field(store):
    model = FunctionModel(lambda request: Completion(content=None), name="empty")  # type: ignore[arg-type]
    summary = run(store, TASK, models=model)

    [failed] = of_type(store, summary.run_id, "LLMCallFailed")
    assert failed.error_kind == "bad_response"
    assert "invalid Completion" in failed.message and "content" in failed.message


def test_a_model_that_hangs_times_out_as_a_recorded_retryable_failure(store):
    release = threading.Event()

    def hangs(request: ModelRequest) -> str:
        release.wait(timeout=30)
        return "too late"

    gateway = quick_gateway(models={"slow": hangs}, timeout=0.2, max_attempts=2)
    try:
        summary = run(store, TASK, agents=agent_configs("slow"), gateway=gateway)
    finally:
        release.set()
        gateway.close()

    assert summary.status == "failed"
    failed = of_type(store, summary.run_id, "LLMCallFailed")
    assert [(f.attempt, f.error_kind, f.retryable, f.gave_up) for f in failed] == [
        (1, "timeout", True, False), (2, "timeout", True, True)]
    assert failed[0].message == "in-process model 'slow' did not answer within 0.2 s"
    assert not of_type(store, summary.run_id, "LLMCallAnswered")  # the late answer is not recorded


def test_an_unscripted_call_fails_the_run_naming_the_agent_and_step(store):
    model = ScriptedModel({"researcher": FINDINGS})
    summary = run(store, TASK, models=model)

    [failed] = of_type(store, summary.run_id, "LLMCallFailed")
    assert failed.message == ("UnscriptedCall: the script of model 'scripted' has no answer left for writer "
                              "at step write-1 (call write-1/1)")


def test_a_fork_reuses_recorded_answers_by_request_hash(store):
    first = ScriptedModel(script())
    parent = run(store, TASK, models=first, max_iterations=1)
    # Fork right after the research call's intent: its answer is not copied, but the same
    # request (same hash, whoever asks) is answered from the parent's log.
    again = ScriptedModel(script())
    child = fork(store, parent.run_id, 2, models=again).wait(timeout=30)

    assert child.status == "finished"
    answered = of_type(store, child.run_id, "LLMCallAnswered")
    assert all(a.reused_from is not None and a.reused_from.run_id == parent.run_id for a in answered)
    assert again.call_count == 0


def test_a_fork_with_one_agent_swapped_to_another_in_process_model(store):
    parent = run(store, TASK, models=ScriptedModel(script()), max_iterations=1)
    strict = ScriptedModel({"reviewer": review(3)}, name="strict")
    child = fork(store, parent.run_id, 7, overrides=Overrides(models={"reviewer": "strict"}), models=strict)
    summary = child.wait(timeout=30)

    assert summary.score == 3
    assert [c.step for c in strict.calls] == ["review-1"]


def test_rereview_with_an_in_process_model(store):
    parent = run(store, TASK, models=ScriptedModel(script()))
    judge = ScriptedModel({"reviewer": review(5)}, name="judge")
    handle = start_rereview(store, parent.run_id, judge)
    assert handle is not None
    summary = handle.wait(timeout=30)

    assert summary.status == "finished"
    assert [c.step for c in judge.calls] == ["review-1", "review-2"]
    assert {r.request["model"] for r in of_type(store, summary.run_id, "LLMCallRequested")} == {"judge"}


def test_a_plain_function_is_a_model_and_the_agents_say_which(store):
    def echo(request: ModelRequest) -> Completion:
        if request.schema_name == "Findings":
            return Completion(content='{"key_areas": ["A"], "facts": [{"area": "A", "facts": ["f"]}], '
                                      '"misconceptions": [], "sources": ["s"]}', prompt_tokens=7, completion_tokens=3)
        if request.schema_name == "Review":
            return Completion(content='{"score": 9, "approved": true, "issues": [], "missed_topics": [], '
                                      '"suggestions": [], "summary": "fine"}')
        return f"# Draft\n\nFor {request.agent} at {request.step}."

    summary = run(store, TASK, agents=agent_configs("offline", {"writer": "echo"}),
                  models={"echo": echo}, max_iterations=1)

    assert summary.status == "finished"
    answered = {a.agent: a for a in of_type(store, summary.run_id, "LLMCallAnswered")}
    assert answered["writer"].model == "echo" and answered["researcher"].model == "offline"
    assert of_type(store, summary.run_id, "DraftReady")[0].draft.startswith("# Draft\n\nFor writer at write-1.")


def test_giving_no_agents_needs_exactly_one_model(store):
    with pytest.raises(ValueError, match="say which model each agent uses"):
        run(store, TASK, models={"a": ScriptedModel(), "b": ScriptedModel()})
    with pytest.raises(TypeError, match="give an object with complete"):
        run(store, TASK, models=42)
    assert store.list_runs() == []


def test_a_name_that_stands_for_another_model_in_the_gateway_is_refused_before_anything_is_written(store):
    gateway = quick_gateway(models={"scripted": ScriptedModel(script())})
    other = ScriptedModel(script())
    with pytest.raises(ValueError, match="'scripted' already stands for another in-process model"):
        run(store, TASK, agents=agent_configs("scripted"), models={"scripted": other}, gateway=gateway)
    assert store.list_runs() == [] and other.calls == []


def test_a_sweep_branches_runs_of_an_in_process_model_and_swaps_in_another(store):
    parent = run(store, TASK, models=ScriptedModel(script(), name="first"), max_iterations=1)
    strict = ScriptedModel({"reviewer": review(3)}, name="strict")
    spec = SweepSpec(runs=[parent.run_id], at="review-1", variants=[
        SweepVariant(label="reviewer=strict", models={"reviewer": "strict"}),
        SweepVariant(label="writer=first", models={"writer": "first"})])

    first = ScriptedModel(script(), name="first")  # the parent's model, needed again only for calls not recorded
    comparison = run_sweep(store, plan_sweep(store, spec), gateway=quick_gateway(), concurrency=2,
                           models={"strict": strict, "first": first})

    assert [m.status for m in comparison.members] == ["finished", "finished"]
    assert len(strict.calls) == 1 and strict.calls[0].agent == "reviewer"  # only the swapped review is asked again
    assert first.calls == []  # the other variant's review is the parent's, reused by request hash
    scores = sorted(v.mean_score for v in comparison.variants)
    assert scores == [3, 6]


def test_the_worked_example_in_the_docs_passes(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "docs" / "models.md").read_text()
    [example] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "def test_the_writer_addresses_the_first_review" in block]
    namespace: dict = {}
    exec(compile(example, "docs/models.md", "exec"), namespace)
    namespace["test_the_writer_addresses_the_first_review"](tmp_path)


def test_a_run_config_runs_with_an_in_process_model(store, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[agents.reviewer]\nsystem_prompt = "Be strict."\n')
    model = ScriptedModel(script())
    summary = load_run_config(path).start(store, TASK, models=model).wait(timeout=30)

    assert summary.status == "finished"
    assert model.calls_for("reviewer")[0].messages[0] == {"role": "system", "content": "Be strict."}
