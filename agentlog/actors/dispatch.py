"""Actors without a thread each: pykka actors whose mailboxes share the process's few threads.

A ``pykka.ThreadingActor`` holds a thread for its whole life: a run's orchestrator and its
agents held four, and 100 runs at once held 400. A ``PooledActor`` is a pykka actor (a
mailbox, ``tell``/``ask``/``stop``, the registry, ``on_start``/``on_stop``/``on_failure``) whose
mailbox is drained by the dispatcher instead: a message to an actor that is not running
schedules a turn, and a turn handles the actor's messages one at a time. Two turns of one
actor never run at once, so an actor's state needs no lock.

Blocking work (a model call, a tool) is handed to the dispatcher with ``submit`` and holds a
thread only while it runs. The dispatcher starts a thread when work arrives and none is idle
(up to ``MAX_THREADS``), and a thread ends after ``IDLE_SECONDS`` without work: a process
holds about as many threads as it has calls and turns running at once, and none when idle.
A task given up for stuck (``release``: an in-process model past its timeout) keeps its
thread but no longer counts against ``MAX_THREADS``; the thread leaves when the task returns.

An actor's turn is short, so the first piece of work it hands off (a message to another
actor, a call) is run next by the same thread, after the turn; further pieces go to other
threads. Blocking work says where it ends (``ending()``) and hands off its result there the
same way. So a message and the turn that handles it, a call and its answer's turn, follow
each other on one thread without a thread switch, and a slow call holds only its own thread.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import pykka
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

log = logging.getLogger(__name__)

Task = Callable[[], None]
_PYKKA_MESSAGES = (_ActorStop, ProxyCall, ProxyGetAttr, ProxySetAttr)

# Past this many threads work waits in a queue: a guard against a runaway, not a working limit
# (a thread is needed per model call in flight, the openai client being synchronous).
MAX_THREADS = 512
IDLE_SECONDS = 2.0
# Messages one turn handles before the actor lets other work in.
TURN_MESSAGES = 32


class _Worker:
    __slots__ = ("task", "wake", "tasks", "released")

    def __init__(self, task: Task):
        self.task = task
        self.wake = threading.Lock()
        self.wake.acquire()
        self.tasks = 0  # tasks begun: with the worker, names the task running (``Dispatcher.running``)
        self.released = False  # its task was given up (``Dispatcher.release``): it leaves once the task returns


class Running:
    """The task a dispatcher thread is running (``Dispatcher.running()``), for ``Dispatcher.release``."""

    __slots__ = ("worker", "task")

    def __init__(self, worker: _Worker, task: int):
        self.worker, self.task = worker, task


class _Ending:
    """``Dispatcher.ending()``'s block (a class: a generator's context manager costs twice as much, once a call)."""

    __slots__ = ("local", "before")

    def __init__(self, local: threading.local):
        self.local = local

    def __enter__(self) -> None:
        local = self.local
        self.before = getattr(local, "handing_off", False)
        local.handing_off = hasattr(local, "next")  # on a dispatcher thread only

    def __exit__(self, *_exc: object) -> None:
        self.local.handing_off = self.before


class Dispatcher:
    """Runs tasks on threads started on demand; idle threads end after ``idle_seconds``."""

    def __init__(self, *, max_threads: int = MAX_THREADS, idle_seconds: float = IDLE_SECONDS,
                 name: str = "agentlog-worker"):
        self.max_threads, self.idle_seconds, self.name = max_threads, idle_seconds, name
        self._lock = threading.Lock()
        self._queue: deque[Task] = deque()
        self._idle: list[_Worker] = []  # most recently idle last: hot threads are reused first
        self._threads = 0
        self._local = threading.local()
        self._numbers = itertools.count(1)
        # Called by the last thread as it ends, the process having had no work for ``idle_seconds``.
        self.when_idle: list[Callable[[], None]] = []

    @property
    def threads(self) -> int:
        """Threads counted against ``max_threads``: running work or idle (not those released)."""
        return self._threads

    def running(self) -> Running | None:
        """The task running on this thread, ``None`` off the dispatcher's threads."""
        worker = getattr(self._local, "worker", None)
        return None if worker is None else Running(worker, worker.tasks)

    def release(self, running: Running | None) -> None:
        """The task ``running`` is given up for stuck (an in-process model past its timeout, whose
        work went on elsewhere): its thread stops counting against ``max_threads`` now, so work
        that waits for a thread gets one, and it leaves the pool when the task returns at last.

        Only that task: once its thread is idle or has begun another task this does nothing
        (in the instant it passes from one task to the next, the next is its last). Callable
        from any thread.
        """
        if running is None:
            return
        worker = running.worker
        with self._lock:
            if worker.released or worker.tasks != running.task or worker in self._idle:
                return
            worker.released = True
            self._threads -= 1
            if not self._queue or self._threads >= self.max_threads:
                return
            task = self._queue.popleft()
        try:
            self.submit(task, after=False)  # a thread in the freed place (an idle one, if any is idle by now)
        except BaseException:  # noqa: BLE001 - no new thread now (a limit of the process): it waits again
            with self._lock:
                self._queue.appendleft(task)
            log.warning("no thread could start for work waiting on the dispatcher", exc_info=True)

    def submit(self, task: Task, *, after: bool = True) -> None:
        """Run ``task`` on a dispatcher thread; a task must catch its own errors.

        ``after=False``: not after the current task on this thread, which may wait for it.
        """
        local = self._local
        if after and getattr(local, "handing_off", False) and local.next is None:
            local.next = task  # run by this thread as soon as its current task ends
            return
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.task = task
                worker.wake.release()
                return
            if self._threads >= self.max_threads:
                self._queue.append(task)
                return
            self._threads += 1
        worker = _Worker(task)
        try:
            threading.Thread(target=self._work, args=(worker,), name=f"{self.name}-{next(self._numbers)}",
                             daemon=True).start()
        except BaseException:
            with self._lock:
                self._threads -= 1
                # No new thread now (a limit of the process): an idle one takes the task, or
                # a busy one when its task ends; only with no thread at all does the caller hear.
                if self._idle:
                    worker = self._idle.pop()
                    worker.task = task
                    worker.wake.release()
                    return
                if self._threads > 0:
                    self._queue.append(task)
                    return
            raise

    def ending(self) -> _Ending:
        """The running task ends with this block: the first work submitted in it runs next on this thread."""
        return _Ending(self._local)

    def _work(self, me: _Worker) -> None:
        local = self._local
        local.next, local.handing_off, local.worker = None, False, me
        task: Task | None = me.task
        me.task = None  # held only while it runs: a task may hold an ended actor
        while True:
            while task is not None:
                me.tasks += 1
                try:
                    task()
                except BaseException:  # noqa: BLE001 - a stray error must not take the thread's later work with it
                    log.exception("a dispatcher task failed")
                local.handing_off = False
                task, local.next = local.next, None
                if task is not None and me.released:  # a released thread runs nothing more
                    try:
                        self.submit(task, after=False)
                        task = None
                    except BaseException:  # noqa: BLE001 - no thread for it (a limit of the process): run here
                        pass
            with self._lock:
                if me.released:  # no longer counted: it leaves (``release``)
                    return
                if self._queue:
                    task = self._queue.popleft()
                    continue
                self._idle.append(me)
            if not me.wake.acquire(timeout=self.idle_seconds):
                with self._lock:
                    if me in self._idle:  # nobody handed it work: it ends
                        self._idle.remove(me)
                        self._threads -= 1
                        last = self._threads == 0
                    else:
                        last = None
                if last is not None:
                    if last:
                        self._went_idle()
                    return
                me.wake.acquire()  # handed work as it timed out: the release is on its way
            task, me.task = me.task, None

    def _went_idle(self) -> None:
        for hook in self.when_idle:
            try:
                hook()
            except Exception:  # noqa: BLE001 - one hook's trouble is not the others'
                log.exception("a dispatcher idle hook failed")


DISPATCHER = Dispatcher()


class _Inbox:
    """A pooled actor's mailbox: putting a message into an inbox with no turn pending schedules one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[Any] = deque()
        self._schedule: Callable[[Any], None] | None = None
        self._scheduled = True  # until the actor starts, messages wait for it
        self._closed = False

    def attach(self, schedule: Callable[[Any], None], *, turn: bool) -> None:
        """Start scheduling turns with ``schedule(envelope)``; ``turn``: schedule one now."""
        with self._lock:
            self._schedule = schedule
            if not (turn or self._items):
                self._scheduled = False
                return
        schedule(None)

    def put(self, envelope: Any, /) -> None:
        with self._lock:
            if self._closed:
                dead = True
            else:
                dead = False
                self._items.append(envelope)
                if self._scheduled:
                    return
                self._scheduled = True
        if dead:  # the actor's last turn is over: whoever asks must not wait forever
            if envelope.reply_to is not None:
                error = pykka.ActorDeadError("the actor stopped before handling the message")
                envelope.reply_to.set_exception((pykka.ActorDeadError, error, None))
            return
        assert self._schedule is not None
        self._schedule(envelope)

    def take(self) -> Any:
        """The next message, or ``None`` (and no turn pending) when there is none."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._scheduled = False
            return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            # Its actor's bound method: the one cycle of an actor (actor -> inbox -> method ->
            # actor). Broken as the actor ends, its memory (a run's state, its events) goes
            # at once rather than at the collector's next pass.
            self._schedule = None

    def get(self) -> Any:  # pykka's teardown, after close()
        with self._lock:
            return self._items.popleft()

    def empty(self) -> bool:
        with self._lock:
            return not self._items


class _Stopped:
    """An actor's stopped flag: what pykka uses of its ``threading.Event`` (``is_set``, ``set``),
    and ``wait``, whose event is made only when someone waits (a run's orchestrator never is)."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with _WAITERS:
            if self._event is None:
                self._event = threading.Event()
        if self._set:  # set before the event was there to be set
            self._event.set()
        return self._event.wait(timeout)


_WAITERS = threading.Lock()
_URNS = random.Random()  # its own: a test that seeds ``random`` must not make two actors' URNs equal
_V4 = 0xC000 << 48 | 0xF000 << 64, 0x8000 << 48 | 0x4000 << 64  # a version 4 UUID's fixed bits


def _urn() -> str:
    """A random (version 4) UUID's URN, as pykka names an actor, at a quarter of ``uuid4``'s cost."""
    h = f"{_URNS.getrandbits(128) & ~_V4[0] | _V4[1]:032x}"
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class PooledActor(pykka.Actor):
    """A pykka actor whose turns run on the dispatcher's threads (see the module's docstring).

    Its handlers must not block for long: a handler that waits (on the network, a person, a
    slow tool) holds a dispatcher thread; hand such work to ``dispatcher.submit`` instead.
    Asking another actor and waiting for its answer works (its turn runs on another thread),
    but costs a thread switch both ways; telling is the actor way. An
    error nobody waits for goes to ``on_failure`` and stops this actor only (a
    ``ThreadingActor`` stops every actor of the process on a ``BaseException``).
    """

    dispatcher: ClassVar[Dispatcher] = DISPATCHER
    actor_inbox: _Inbox  # type: ignore[assignment]

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # pykka's ``Actor.__init__``, lighter: a run starts an actor, and pykka's made a uuid4 and a
        # ``threading.Event`` (a lock and a condition) for it, half its cost.
        self.actor_urn = _urn()
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = _Stopped()  # type: ignore[assignment]
        self._actor_ref = pykka.ActorRef(self)

    @staticmethod
    def _create_actor_inbox() -> _Inbox:  # type: ignore[override]
        return _Inbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self._begun = False
        # An actor with nothing to do on start costs nothing until its first message.
        self.actor_inbox.attach(self._schedule_turn, turn=type(self).on_start is not pykka.Actor.on_start)

    def _schedule_turn(self, envelope: Any) -> None:
        asked = envelope is not None and envelope.reply_to is not None
        if asked and isinstance(envelope.message, _ActorStop):
            # Whoever stops an idle actor this way waits for it: its last turn runs here, at once.
            self._turn(inline=True)
        else:
            # Whoever asks may wait for the answer: the turn must not wait for the asker's task.
            self.dispatcher.submit(self._turn, after=not asked)

    def _turn(self, inline: bool = False) -> None:
        if not inline:
            self.dispatcher._local.handing_off = True  # a turn is short: what it hands off may wait for its end
        if not self._begun:
            self._begun = True
            self._actor_loop_setup()
        stopped, inbox = self.actor_stopped, self.actor_inbox
        for _ in range(TURN_MESSAGES):
            if stopped._set:  # type: ignore[attr-defined]
                inbox.close()
                self._actor_loop_teardown()
                return
            envelope = inbox.take()
            if envelope is None:
                return
            self._receive(envelope)
        self._schedule_turn(None)  # more may be waiting: the turn is still ours, so no one else schedules it

    def _receive(self, envelope: Any) -> None:
        # pykka's ThreadingActor loop, for one message.
        try:
            message = envelope.message
            # pykka's own messages (stop, a proxy's call) as pykka handles them; any other to on_receive.
            response = (self._handle_receive(message) if isinstance(message, _PYKKA_MESSAGES)
                        else self.on_receive(message))
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except BaseException:  # noqa: BLE001 - to the caller, else to on_failure; the thread goes on
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
                return
            self._handle_failure(*sys.exc_info())
            try:
                self.on_failure(*sys.exc_info())
            except Exception:  # noqa: BLE001
                self._handle_failure(*sys.exc_info())
