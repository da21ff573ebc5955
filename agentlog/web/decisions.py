"""The viewer's one write path: a person's decision on a waiting run, posted from its page.

Guarded three ways besides the Host check: POST only; a per-page token, the HMAC of a
per-process secret over the run id and the event number the page showed (a page of another
origin cannot read it, and it is good for that run at that point only); and, when the
browser sends one, an ``Origin`` that must be this server's. The decision is appended with
optimistic concurrency at that event number, so a stale page or a second person loses
cleanly. The read pages keep the read-only store; this path opens a writable one per request.

After a decision the run goes on here, in a background thread with the server's gateway
(the same ``resume`` as ``agentlog resume``); the run page follows it live.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pykka

from agentlog.actors import RunHandle
from agentlog.models import Gateway, ModelNotConfigured
from agentlog.replay import NotWaiting, ReplayError, build_view, decide_run, resume
from agentlog.store import Store, StoreError, open_store
from agentlog.tools import ToolRegistry

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 1 << 20  # a draft of a megabyte is plenty


class Refused(Exception):
    """A decision the server will not record: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Tokens:
    """Per-page tokens: HMAC-SHA256 of a secret made when the process starts."""

    def __init__(self, secret: bytes | None = None):
        self._secret = secret or secrets.token_bytes(32)

    def make(self, run_id: str, seq: int) -> str:
        return hmac.new(self._secret, f"{run_id}\0{seq}".encode(), hashlib.sha256).hexdigest()

    def check(self, run_id: str, seq: int, token: str) -> bool:
        return hmac.compare_digest(self.make(run_id, seq), token)


def check_origin(origin: str | None, host: str | None) -> None:
    """A browser names the page a POST comes from; it must be one of ours."""
    if origin is None:
        return
    parts = urlsplit(origin)
    if origin == "null" or parts.netloc != (host or "") or parts.scheme not in ("http", "https"):
        raise Refused(403, "this form was posted from another site; open the run page here and decide again")


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, one value per field."""
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refused(400, "the form is not UTF-8") from None
    return {name: values[-1] for name, values in fields.items()}


class Decisions:
    """Records decisions and continues the runs they unblock, for one server process."""

    def __init__(self, db_path: str, tokens: Tokens, gateway: Gateway | None, tools: ToolRegistry | None,
                 default_by: str):
        self.db_path, self.tokens, self.gateway, self.tools = db_path, tokens, gateway, tools
        self.default_by = default_by
        self._lock = threading.Lock()
        self._running: dict[str, tuple[RunHandle, Store]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def decide(self, run_id: str, form: dict[str, str]) -> str | None:
        """Record the decision in ``form`` on ``run_id`` and continue the run.

        Returns ``None`` when the run goes on here, else why it does not (the decision is
        recorded either way). Raises ``Refused`` for a decision that cannot be taken.
        """
        try:
            seq = int(form.get("seq", ""))
        except ValueError:
            raise Refused(400, "the form names no event number; reload the run page") from None
        if not self.tokens.check(run_id, seq, form.get("token", "")):
            raise Refused(403, "the form's token is not valid for this run; reload the run page and decide again")
        decision = form.get("decision", "")
        draft = form.get("draft") if decision == "edit" else None
        if draft is not None:
            draft = draft.replace("\r\n", "\n")  # browsers send text areas with CRLF line ends
        store = open_store(self.db_path, create=False)
        try:
            decide_run(store, run_id, decision, by=form.get("by", "").strip() or self.default_by,
                       note=form.get("note", ""), draft=draft, at_seq=seq)
        except NotWaiting as exc:
            store.close()
            raise Refused(409, str(exc)) from None
        except (ReplayError, StoreError, ValueError) as exc:  # ValueError: a pipeline this process lacks
            store.close()
            raise Refused(400, str(exc)) from None
        return self._continue(store, run_id)

    def _continue(self, store: Store, run_id: str) -> str | None:
        if self.gateway is None:
            store.close()
            return "this viewer does not run models"
        try:
            for agent in build_view(run_id, store.read(run_id)).agents.values():
                self.gateway.check(agent.model)
            handle = resume(store, run_id, gateway=self.gateway, tools=self.tools)
        except (ModelNotConfigured, ReplayError, StoreError) as exc:
            store.close()
            return str(exc)
        with self._lock:
            self._running[run_id] = (handle, store)
        thread = threading.Thread(target=self._wait, args=(run_id, handle, store), daemon=True,
                                  name=f"agentlog-continue-{run_id}")
        self._threads.append(thread)
        thread.start()
        return None

    def _wait(self, run_id: str, handle: RunHandle, store: Store) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    handle.wait(timeout=0.5)
                    break
                except pykka.Timeout:
                    continue
        except Exception:  # the run's own events say what went wrong; the server goes on
            log.exception("run %s stopped", run_id)
        finally:
            with self._lock:
                self._running.pop(run_id, None)
            store.close()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def wait_all(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the runs continued here to settle; whether they did."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.running()

    def stop(self) -> None:
        """Stop the runs continued here; their logs stay consistent and `agentlog resume` goes on."""
        self._stopping.set()
        with self._lock:
            running = list(self._running.values())
        for handle, _store in running:
            handle.stop(grace=2.0)
        for thread in list(self._threads):
            thread.join(5.0)
