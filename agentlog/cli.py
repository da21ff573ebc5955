"""The ``agentlog`` command: run pipelines and work with their logs.

A user's mistake gets one line naming the problem and exit code 2, never a traceback.
Exit codes: 0 done, 1 the run failed (or verify found a divergence), 2 bad input,
3 another process is writing the same run, 4 the run waits for a person's decision, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import pykka

from . import render
from .actors.lease import check_free, lease_seconds
from .actors import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_THRESHOLD,
    RunAborted,
    Budget,
    RunHandle,
    enqueue_run,
    start_run,
    validate_run_settings,
)
from .config import Config, ConfigError, config_path, default_db, load_config
from .events import CodecError, RunStarted, decode, encode
from .models import (
    NO_MODEL_HINT,
    OFFLINE_LABEL,
    Endpoint,
    Gateway,
    ModelNameError,
    ModelNotConfigured,
    PriceTable,
    RetryPolicy,
    parse_model,
)
from .pipelines import UnknownPipeline
from .runconfig import RunConfig, load_run_config
from .replay import (
    APPROVALS,
    NotWaiting,
    Overrides,
    ReplayError,
    build_view,
    decide_run,
    enqueue_fork,
    enqueue_rereview,
    fork,
    resume,
    run_cost,
    start_rereview,
    verify,
    waiting,
)
from .store import (
    ConcurrencyError,
    DamagedEvent,
    DiskFull,
    LeaseHeld,
    LeaseLost,
    LogUnavailable,
    RunSummary,
    Store,
    StoreBusy,
    StoreError,
    StoredEvent,
    open_store,
    redact,
)
from .store.url import StoreURLError, is_postgres, sqlite_path
from .terminal import LiveTerminal
from .tools import ToolRegistry

EXIT_FAILED, EXIT_USAGE, EXIT_CONFLICT, EXIT_WAITING, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
DEFAULT_MODEL_WITH_KEY = "gpt-4o-mini"


class UsageError(Exception):
    """A mistake in what the user asked: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# --- argument types --------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, got {value}")
    return value


def _score(text: str) -> int:
    value = _positive_int(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"a score is from 1 to 10, got {value}")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount in USD, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"a budget must be a positive amount, got {text}")
    return value


def _assignment(text: str) -> tuple[str, str]:
    agent, sep, value = text.partition("=")
    if not sep or not agent.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected AGENT=VALUE, got {text!r}")
    return agent.strip(), value.strip()


def _model_arg(text: str) -> tuple[str | None, str]:
    """``MODEL`` for every agent, or ``AGENT=MODEL`` for one."""
    if "=" in text:
        return _assignment(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("empty model name")
    return None, text.strip()


def _temperature_arg(text: str) -> tuple[str, float]:
    agent, value = _assignment(text)
    try:
        t = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"temperature for {agent} must be a number, got {value!r}") from None
    if not 0.0 <= t <= 2.0:
        raise argparse.ArgumentTypeError(f"temperature for {agent} must be between 0 and 2, got {t}")
    return agent, t


# --- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH|URL", help="the log: a file, sqlite:///PATH or postgresql://USER@HOST/DB "
                        "(default: $AGENTLOG_DB, the config file's db, or ~/.local/share/agentlog/agentlog.db)")
    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    endpoint.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="per-request timeout (default 120)")
    endpoint.add_argument("--retries", type=_positive_int, default=5, metavar="N",
                          help="attempts per call for transient errors (default 5)")
    endpoint.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    tooling = argparse.ArgumentParser(add_help=False)
    tooling.add_argument("--docs", metavar="DIR", help="index DIR's .txt/.md files (SQLite FTS5, in "
                         "DIR/.agentlog-docs.db) and give the researchers a search_documents tool")
    tooling.add_argument("--config", metavar="FILE", help="a run config (TOML): agents mapped onto roles with "
                         "their prompts, models, temperatures and tools (see docs/tools.md)")
    budget = argparse.ArgumentParser(add_help=False)
    budget.add_argument("--budget-usd", type=_usd, metavar="USD",
                        help="stop before a request once the run has spent this much (by the price table)")
    budget.add_argument("--budget-tokens", type=_positive_int, metavar="N",
                        help="stop before a request once the run has spent this many tokens")

    parser = _Parser(prog="agentlog", description="Multi-agent LLM pipelines with every step in a durable log.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", parents=[common, endpoint, tooling, budget],
                       help="run the research -> write -> review pipeline")
    p.add_argument("task", help="what to write about")
    p.add_argument("--model", action="append", type=_model_arg, default=[], metavar="[AGENT=]MODEL",
                   help="model for every agent, or AGENT=MODEL for one (repeatable); 'offline' needs no key; "
                   "python:MODULE:FACTORY is an in-process model")
    p.add_argument("--temperature", action="append", type=_temperature_arg, default=[], metavar="AGENT=T")
    p.add_argument("--max-iterations", type=_positive_int, metavar="N",
                   help=f"write/review rounds at most (default {DEFAULT_MAX_ITERATIONS})")
    p.add_argument("--threshold", type=_score, metavar="SCORE",
                   help=f"approve at this review score (1-10, default {DEFAULT_THRESHOLD})")
    p.add_argument("--research", choices=["single", "parallel"],
                   help="one researcher, or a facts and a counter-arguments researcher at once (default single)")
    p.add_argument("--max-tokens", type=_positive_int, metavar="N",
                   help="bound each answer's length (default: none; 600 for local models)")
    p.add_argument("--approval", choices=APPROVALS,
                   help="where a person decides on the draft: final (before the run finishes), each-review "
                   "(after every review), never (default); the run waits for `agentlog approve|edit|reject`")
    p.add_argument("--out", metavar="FILE", help="write the final draft here instead of stdout")
    _otlp_flags(p, required=False)
    p.add_argument("--sample", type=_positive_int, default=1, metavar="K",
                   help="ask for fresh sample K of every answer (K > 1 is a distinct request; default 1)")
    _queue_flag(p)

    p = sub.add_parser("runs", parents=[common], help="list runs")
    p.add_argument("--status", choices=["queued", "running", "waiting", "finished", "failed"])
    p.add_argument("--search", metavar="TEXT", help="only runs whose task or id contains TEXT")
    p.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("show", parents=[common], help="a run's events, final draft and score history")
    p.add_argument("run")
    p.add_argument("--json", action="store_true", help="the stored events as JSON lines")

    p = sub.add_parser("replay", parents=[common], help="rebuild a run from its log and show it (no network)")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("resume", parents=[common, endpoint, tooling, budget], help="continue an unfinished run")
    p.add_argument("run")
    p.add_argument("--model", action="append", type=_assignment, default=[], metavar="AGENT=MODEL")
    p.add_argument("--out", metavar="FILE")

    p = sub.add_parser("fork", parents=[common, endpoint, tooling, budget],
                       help="a new run from event SEQ of RUN, with overrides")
    p.add_argument("run")
    p.add_argument("--at", type=_positive_int, required=True, metavar="SEQ", help="last event copied from RUN")
    p.add_argument("--model", action="append", type=_assignment, default=[], metavar="AGENT=MODEL")
    p.add_argument("--temperature", action="append", type=_temperature_arg, default=[], metavar="AGENT=T")
    p.add_argument("--max-iterations", type=_positive_int, metavar="N")
    p.add_argument("--threshold", type=_score, metavar="SCORE")
    p.add_argument("--approval", choices=APPROVALS, help="change where a person decides (see `run --approval`)")
    p.add_argument("--out", metavar="FILE")
    _queue_flag(p)

    p = sub.add_parser("rereview", parents=[common, endpoint], help="score every recorded draft with another reviewer")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--model", required=True, metavar="MODEL")
    p.add_argument("--json", action="store_true")
    _queue_flag(p)

    p = sub.add_parser("worker", parents=[common, endpoint, tooling],
                       help="claim queued runs from the log and drive them (until SIGTERM or Ctrl-C)")
    p.add_argument("--concurrency", type=_positive_int, default=4, metavar="N",
                   help="runs driven at once (default 4)")
    p.add_argument("--poll", type=_seconds, default=1.0, metavar="SECONDS",
                   help="how often to look for queued runs while there are none (default 1)")
    p.add_argument("--idle-exit", type=_seconds, metavar="SECONDS",
                   help="exit (0) once nothing was queued and nothing in hand for this long (default: never)")

    deciding = argparse.ArgumentParser(add_help=False)
    deciding.add_argument("--by", metavar="NAME", help="who decides (default: the operating-system user)")
    deciding.add_argument("--no-continue", action="store_true",
                          help="only record the decision; `agentlog resume RUN` continues the run later")
    deciding.add_argument("--out", metavar="FILE", help="write the final draft here instead of stdout")
    for name, text in (("approve", "approve the draft a waiting run asks about; the run finishes with it"),
                       ("edit", "replace the draft a waiting run asks about with your version, which continues"),
                       ("reject", "send the draft back: the writer revises it with your note first")):
        p = sub.add_parser(name, parents=[common, endpoint, tooling, deciding], help=text)
        p.add_argument("run")
        p.add_argument("--note", required=name == "reject", metavar="TEXT",
                       help="why" + (" (required: the writer is given it)" if name == "reject" else ""))
        if name == "edit":
            p.add_argument("--draft", required=True, metavar="FILE", help="your version of the draft ('-': stdin)")

    p = sub.add_parser("verify", parents=[common], help="check recorded runs against today's deciders")
    p.add_argument("runs", nargs="*", metavar="RUN")
    p.add_argument("--all", action="store_true", help="every run in the log")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", parents=[common], help="a run's events as JSON lines (for golden logs)")
    p.add_argument("run")

    p = sub.add_parser("import", parents=[common], help="append runs exported as JSON lines")
    p.add_argument("file")

    p = sub.add_parser("copy", help="copy every run of one log into another (SQLite or PostgreSQL), "
                       "identical events; repeat it to bring new events over")
    p.add_argument("--from", dest="source", required=True, metavar="SRC", help="the log to copy (a path or URL)")
    p.add_argument("--to", dest="dest", required=True, metavar="DST",
                   help="the log to copy into (created when missing)")

    p = sub.add_parser("watch", parents=[common], help="print a run's events as they are appended, until it ends")
    p.add_argument("run")

    p = sub.add_parser("vacuum", parents=[common], help="drop stored text no event refers to, compact the file")
    p.add_argument("--dry-run", action="store_true", help="only say what it would free")

    p = sub.add_parser("trace", parents=[common], help="send recorded runs as OpenTelemetry spans (OTLP/HTTP)")
    p.add_argument("runs", nargs="+", metavar="RUN")
    _otlp_flags(p, required=True)

    p = sub.add_parser("serve", parents=[common, endpoint, tooling],
                       help="a web viewer of the log on 127.0.0.1, where a person can decide on waiting runs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8765)
    p.add_argument("--read-only", action="store_true",
                   help="no decisions from the browser: no forms, no POST routes (always so off loopback)")
    _add_sweep_parser(sub, [common, endpoint, tooling, budget])
    return parser


def _queue_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="store_true",
                   help="put the run in the log's queue for `agentlog worker` instead of running it here; "
                   "prints its id")


def _otlp_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    when = "" if required else " when the run ends"
    p.add_argument("--otlp", metavar="URL", required=required,
                   help=f"send the run's spans{when} to this OTLP/HTTP receiver, e.g. http://127.0.0.1:4318")
    p.add_argument("--with-content", action="store_true",
                   help="include prompts, answers, tool arguments and results in the spans (default: left out)")
    p.add_argument("--otlp-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up sending spans after this long (default 10)")
def _list_arg(convert: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [v.strip() for v in text.split(",")]
        if not all(values):
            raise argparse.ArgumentTypeError(f"expected {what}[,{what}...], got {text!r}")
        return [convert(v) for v in values]
    return parse


def _sweep_axis(convert: Callable[[str], Any], what: str) -> Callable[[str], tuple[str, list[Any]]]:
    def parse(text: str) -> tuple[str, list[Any]]:
        agent, values = _assignment(text)
        return agent, _list_arg(convert, what)(values)
    return parse


def _temperature_value(text: str) -> float:
    return _temperature_arg(f"agent={text}")[1]


def _add_sweep_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sweep", parents=parents, help="fork many runs with variants, and compare them "
                       "(also: sweep list, sweep show ID)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="runs to branch (or `list`, or `show ID`)")
    p.add_argument("--at", metavar="POINT", help="the branch point: a step (research, write-2, review-1) or a seq")
    p.add_argument("--search", metavar="TEXT", help="also every run whose task or id contains TEXT")
    p.add_argument("--status", choices=["running", "waiting", "finished", "failed"], help="only runs with this status")
    p.add_argument("--tasks", metavar="FILE", help="fresh runs instead: one task per line of FILE")
    p.add_argument("--base-model", metavar="MODEL", help="with --tasks: the model of agents no variant sets")
    p.add_argument("--model", action="append", type=_sweep_axis(str, "MODEL"), default=[],
                   metavar="AGENT=A,B", help="one variant per model for AGENT (repeatable: every combination)")
    p.add_argument("--temperature", action="append", type=_sweep_axis(_temperature_value, "T"), default=[],
                   metavar="AGENT=T1,T2")
    p.add_argument("--threshold", type=_list_arg(_score, "SCORE"), default=[], metavar="N,M")
    p.add_argument("--max-iterations", type=_list_arg(_positive_int, "N"), default=[], metavar="N,M")
    p.add_argument("--variants", metavar="FILE", help="named variants (TOML [variants.NAME] tables)")
    p.add_argument("--samples", type=_positive_int, default=1, metavar="N",
                   help="N fresh samples of every run x variant (default 1)")
    p.add_argument("--concurrency", type=_positive_int, default=4, metavar="N", help="runs at once (default 4)")
    p.add_argument("--json", action="store_true", help="the comparison as one JSON document")
    p.add_argument("--csv", action="store_true", help="the per-variant comparison as CSV")


# --- helpers ----------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace, config: Config):
        self.args, self.config = args, config
        self.notes: list[str] = []
        self.db = getattr(args, "db", None) or default_db(config)  # a path or a URL
        self.db_shown = redact(self.db)  # as messages show it: never with a password

    def store(self, *, create: bool = False, read_only: bool = False) -> Store:
        return open_store(self.db, create=create, read_only=read_only)

    def db_file(self) -> Path:
        """The SQLite file ``--db`` names; ``UsageError`` if it names none, or a database of another kind."""
        try:
            path = sqlite_path(self.db)
        except StoreURLError as exc:
            raise UsageError(str(exc)) from None
        if not path.exists():
            raise UsageError(f"no agentlog database at {path}")
        return path

    def check_out(self) -> None:
        """``--out FILE`` must be writable as a file: checked before anything is paid for."""
        out = getattr(self.args, "out", None)
        if not out:
            return
        path = Path(out).expanduser()
        if path.is_dir():
            raise UsageError(f"--out {out} is a directory: name a file to write the final draft to")
        if not path.parent.is_dir():
            raise UsageError(f"--out {out}: there is no directory {path.parent}")
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise UsageError(f"--out {out}: cannot write there")

    def prices(self) -> PriceTable:
        return self.config.price_table()

    def gateway(self) -> Gateway:
        args = self.args
        timeout = args.timeout if args.timeout is not None else self.config.timeout
        if not (math.isfinite(timeout) and timeout > 0):
            raise UsageError(f"the timeout must be a positive, finite number of seconds, got {timeout}")
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or self.config.base_url
        return Gateway(Endpoint.from_env(base_url=base_url), retry=RetryPolicy(max_attempts=args.retries),
                       timeout=timeout, python_path=self.python_path())

    def python_path(self) -> list[str]:
        """Where ``python:MODULE:FACTORY`` models are looked for first: here, and beside --config."""
        config = getattr(self.args, "config", None)
        return [os.getcwd(), *([str(Path(config).expanduser().resolve().parent)] if config else [])]

    def run_config(self) -> RunConfig:
        path = getattr(self.args, "config", None)
        return load_run_config(path) if path else RunConfig()

    def tools(self, run_config: RunConfig | None = None) -> ToolRegistry:
        """The tools of this process: the run config's, and the documents search of --docs."""
        run_config = run_config if run_config is not None else self.run_config()
        docs = getattr(self.args, "docs", None)
        registry = run_config.registry(docs)
        if docs and not getattr(self.args, "quiet", False):
            print(f"documents: {Path(docs).resolve()} (index in {Path(docs).resolve() / '.agentlog-docs.db'})",
                  file=sys.stderr)
        return registry


def _err(message: str) -> None:
    print(f"agentlog: {message}", file=sys.stderr)


def _progress(quiet: bool, terminal: LiveTerminal | None = None) -> Callable[[StoredEvent], None] | None:
    if quiet:
        return None

    def observe(stored: StoredEvent) -> None:
        line = render.progress_line(stored.event)
        if line and terminal is not None:
            terminal.line(line)
        elif line:
            print(line, file=sys.stderr, flush=True)

    return observe


def _watch(quiet: bool) -> dict[str, Any]:
    """``observer`` and ``watcher`` for a run: progress lines, and streamed answers when stderr
    is a terminal (never into a pipe or a file)."""
    terminal = LiveTerminal(sys.stderr) if not quiet and sys.stderr.isatty() else None
    return {"observer": _progress(quiet, terminal), "watcher": terminal}


def _wait(handle: RunHandle) -> RunSummary:
    """Wait for a run, letting Ctrl-C through; stop the actors on interrupt."""
    try:
        while True:
            try:
                return handle.wait(timeout=0.25)
            except pykka.Timeout:
                continue
    except KeyboardInterrupt:
        handle.stop()
        _err(f"interrupted; the log is consistent. Continue with: agentlog resume {handle.run_id}")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except DiskFull as exc:
        handle.stop()
        _err(f"{exc}: free some space, then continue with: agentlog resume {handle.run_id}")
        raise SystemExit(EXIT_USAGE) from None
    except LogUnavailable as exc:
        handle.stop()
        _err(f"the log's database went away ({exc}); every event recorded before is kept: once it is back, "
             f"continue with: agentlog resume {handle.run_id}")
        raise SystemExit(EXIT_USAGE) from None


def _finish(ctx: Context, store: Store, summary: RunSummary) -> int:
    view = build_view(summary.run_id, store.read(summary.run_id))
    out = getattr(ctx.args, "out", None)
    if view.status == "waiting" and view.waiting_for is not None:
        # The draft a person decides on goes where a final draft would: edit it, then `agentlog edit`.
        asked = view.drafts[view.waiting_for - 1].draft if len(view.drafts) >= view.waiting_for else ""
        _write_draft(out, asked, f"draft {view.waiting_for} written to {out}", summary.run_id)
        for line in render.waiting_lines(summary.run_id, view.waiting_for, view.waiting_point or "final"):
            _err(line)
        return EXIT_WAITING
    if view.status == "failed":
        _err(f"run {summary.run_id} failed: {view.failure}")
        _err(f"see `agentlog show {summary.run_id}`; continue with `agentlog resume {summary.run_id}`")
        return EXIT_FAILED
    _write_draft(out, view.final_draft or "", f"final draft written to {out}", summary.run_id)
    print(render.outcome_line(view, run_cost((s.event for s in store.read(summary.run_id)), ctx.prices())),
          file=sys.stderr)
    return 0


def _write_draft(out: str | None, draft: str, written: str, run_id: str) -> None:
    if out:
        try:  # checked before the run, it can still fail (the disk filled, the directory went away)
            Path(out).expanduser().write_text(draft)
        except OSError as exc:
            raise UsageError(f"cannot write {out} ({exc.strerror}); the draft is in the log: "
                             f"agentlog show {run_id}") from None
        print(written, file=sys.stderr)
    else:
        sys.stdout.write(draft if draft.endswith("\n") else draft + "\n")


def _label_offline(models: Sequence[str]) -> None:
    if any(parse_model(m).provider == "offline" for m in models):
        print(f"note: using the {OFFLINE_LABEL}", file=sys.stderr)


def _resolve_models(ctx: Context, fallback: str | None = None) -> tuple[str, dict[str, str]]:
    """The default model and per-agent overrides, from flags, ``fallback`` (a run config's
    model), config and environment."""
    default: str | None = None
    per_agent: dict[str, str] = {name: a.model for name, a in ctx.config.agents.items() if a.model}
    for agent, model in ctx.args.model:
        if agent is None:
            default = model
        else:
            per_agent[agent] = model
    default = default or fallback or ctx.config.model
    if default is None:
        endpoint = Endpoint.from_env(base_url=ctx.args.base_url or os.environ.get("OPENAI_BASE_URL") or ctx.config.base_url)
        if endpoint.base_url:
            raise UsageError(f"name the model served at {endpoint.base_url} with --model NAME")
        if endpoint.api_key:
            default = DEFAULT_MODEL_WITH_KEY
        else:
            from .models import local

            if local.local_available():
                default = "local"
                ctx.notes.append("note: no API key or base URL configured; using the local model "
                                 "(SmolLM2-135M on llama.cpp, on this machine)")
            else:
                raise UsageError(f"{NO_MODEL_HINT}; or {local.LOCAL_EXTRA_HINT}")
    return default, per_agent


def _check_priced(ctx: Context, models: Sequence[str]) -> None:
    """A USD budget needs a price for every model that may be paid for."""
    if getattr(ctx.args, "budget_usd", None) is None:
        return
    prices = ctx.prices()
    unpriced = sorted({m for m in models if prices.price(m) is None})
    if unpriced:
        raise UsageError(f"--budget-usd needs a price for {', '.join(unpriced)}: add it to the config file "
                         f"({config_path()}) as [prices.\"{unpriced[0]}\"] input = ..., output = ... (USD per "
                         f"million tokens)")


def _costs(store: Store, run_ids: Sequence[str], prices: PriceTable) -> dict[str, Any]:
    """Each run's cost; a run whose log is damaged has none (the list itself is the runs index)."""
    costs = {}
    for run_id in run_ids:
        try:
            costs[run_id] = run_cost((s.event for s in store.read(run_id)), prices)
        except DamagedEvent:
            continue
    return costs


def _check_agents(agents: dict[str, str], roles: Sequence[str]) -> None:
    for agent in agents:
        if agent not in roles:
            raise UsageError(f"unknown agent {agent!r} (agents: {', '.join(roles)})")


# --- commands --------------------------------------------------------------------------


def _print_comparison(ctx: Context, comparison: Any) -> None:
    if ctx.args.json:
        print(json.dumps(msgspec.to_builtins(comparison), indent=2))
    elif ctx.args.csv:
        sys.stdout.write(render.sweep_csv(comparison))
    else:
        print(render.sweep_comparison(comparison))


def _sweep_selection(ctx: Context, store: Store) -> list[str]:
    from .replay import sweep

    args = ctx.args
    chosen = [_run_id(store, r) for r in args.runs]
    if args.search is not None or (args.status and not args.runs):
        members = {s.run_id for s in sweep.all_members(store)}  # a sweep's own runs are not parents
        chosen += [r.run_id for r in store.list_runs(status=args.status, text=args.search)
                   if r.run_id not in members and r.pipeline == "content"]
    if args.status and args.runs:
        chosen = [r for r in chosen if store.get_run(r).status == args.status]
    return sorted(set(chosen))


def _sweep_tasks(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _sweep_variant_file(path: str) -> list[Any]:
    import tomllib

    from .events import SweepVariant

    class VariantEntry(msgspec.Struct, forbid_unknown_fields=True):
        models: dict[str, str] = {}
        temperatures: dict[str, float] = {}
        max_iterations: int | None = None
        threshold: int | None = None

    try:
        raw = tomllib.loads(Path(path).read_text())
        entries = msgspec.convert(raw.get("variants", {}), dict[str, VariantEntry])
        if set(raw) - {"variants"}:
            raise UsageError(f"variants file {path}: unknown key {sorted(set(raw) - {'variants'})[0]!r} "
                             f"(expected [variants.NAME] tables)")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise UsageError(f"variants file {path}: {exc}") from None
    return [SweepVariant(label=name, **msgspec.structs.asdict(v)) for name, v in entries.items()]


def cmd_sweep(ctx: Context) -> int:
    from .replay import sweep

    args = ctx.args
    if args.json and args.csv:
        raise UsageError("choose one of --json and --csv")
    if args.runs[:1] == ["list"]:
        infos = sweep.list_sweeps(ctx.store())
        if args.json:
            print(json.dumps([msgspec.to_builtins(i) for i in infos], indent=2))
        elif infos:
            print(render.sweeps_table(infos))
        else:
            print("no sweeps yet: start one with `agentlog sweep RUN... --at STEP --model AGENT=A,B`",
                  file=sys.stderr)
        return 0
    if args.runs[:1] == ["show"]:
        if len(args.runs) != 2:
            raise UsageError("usage: agentlog sweep show ID")
        store = ctx.store()
        _print_comparison(ctx, sweep.load_comparison(store, sweep.resolve_sweep_id(store, args.runs[1]),
                                                     ctx.prices()))
        return 0
    if args.tasks and (args.runs or args.search or args.status or args.at):
        raise UsageError("--tasks starts fresh runs: it takes no RUN, --search, --status or --at")
    if not args.tasks and not args.at:
        raise UsageError("name the branch point with --at STEP (research, write-2, review-1, ...) or --at SEQ")
    named = _sweep_variant_file(args.variants) if args.variants else []
    found = sweep.variants(args.model, args.temperature, args.threshold, args.max_iterations, named)
    if args.tasks:
        tasks = _sweep_tasks(args.tasks)
        if not tasks:
            raise UsageError(f"{args.tasks} holds no tasks (one per line)")
        base = args.base_model or _resolve_models(_WithoutModels(ctx))[0]
        spec = sweep.SweepSpec(tasks=tasks, base_model=base, variants=found, samples=args.samples)
        store = ctx.store(create=True)
    else:
        store = ctx.store()
        spec = sweep.SweepSpec(runs=_sweep_selection(ctx, store), at=args.at, variants=found, samples=args.samples)
    the_plan = sweep.plan_sweep(store, spec)
    gateway = ctx.gateway()
    models = the_plan.models(store)
    for model in models:
        gateway.check(model)
    _check_priced(ctx, models)
    for run_id, why in the_plan.skipped:
        _err(f"run {run_id} {why}; skipped")
    _label_offline(models)
    progress = sweep.Progress(total=len(the_plan.members))
    live = not args.quiet and sys.stderr.isatty()
    if live:
        lock = threading.Lock()

        def show(p: Any) -> None:
            with lock:
                sys.stderr.write("\r" + p.line() + "\x1b[K")
                sys.stderr.flush()

        progress.on_change = show
    if not args.quiet:
        todo = sum(p.status != "finished" for p in the_plan.members)
        print(f"sweep {the_plan.sweep_id}: {len(the_plan.members)} runs ({todo} to run) "
              f"(log: {ctx.db_shown})", file=sys.stderr)
    try:
        comparison = sweep.run_sweep(store, the_plan, gateway=gateway, prices=ctx.prices(),
                                     concurrency=args.concurrency, budget_usd=args.budget_usd,
                                     budget_tokens=args.budget_tokens, progress=progress, tools=ctx.tools())
    except KeyboardInterrupt:
        _err(f"interrupted; the log is consistent. Run the same sweep command again to resume sweep "
             f"{the_plan.sweep_id}")
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        if live:
            sys.stderr.write("\n")
        gateway.close()
    if not args.quiet:
        print(progress.line(), file=sys.stderr)
    _print_comparison(ctx, comparison)
    return EXIT_FAILED if any(m.status != "finished" for m in comparison.members) else 0


class _WithoutModels:
    """A context whose --model flags (a sweep's variants) are not a run's model."""

    def __init__(self, ctx: Context):
        self.config, self.notes = ctx.config, ctx.notes
        self.args = argparse.Namespace(**{**vars(ctx.args), "model": []})


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    if not args.task.strip():
        raise UsageError("the task is empty: say what the pipeline should write about")
    if any("\ud800" <= c <= "\udfff" for c in args.task):  # bytes that were not UTF-8
        raise UsageError(f"the task is not valid UTF-8 text: {render.escaped(args.task)}")
    _check_queue(args)
    ctx.check_out()
    _check_otlp(args)
    run_config = ctx.run_config()
    if args.research:
        run_config = msgspec.structs.replace(run_config, research=args.research)
    roles = run_config.run_roles()
    flagged = [agent for agent, _ in (*args.model, *args.temperature) if agent]
    if "counter_researcher" in flagged and "counter_researcher" not in roles:
        raise UsageError("the counter_researcher runs only in parallel research: add --research parallel")
    _check_agents(dict.fromkeys(flagged, ""), roles)  # before the models are resolved
    default, per_agent = _resolve_models(ctx, fallback=run_config.model)
    temperatures = {n: a.temperature for n, a in ctx.config.agents.items() if a.temperature is not None}
    _check_agents(per_agent, roles)
    _check_agents(dict(args.temperature), roles)
    # Flags win over the run config, which wins over the user's config file.
    flag_models = {agent: model for agent, model in args.model if agent is not None}
    file_models = {role: spec.model for role, spec in run_config.by_role().items() if spec.model}
    file_temperatures = {r: s.temperature for r, s in run_config.by_role().items() if s.temperature is not None}
    temperatures = {k: v for k, v in temperatures.items() if k in roles and k not in file_temperatures}
    agents = run_config.agent_configs(default, per_agent | file_models | flag_models,
                                      temperatures | dict(args.temperature), max_tokens=args.max_tokens)
    max_iterations = args.max_iterations or run_config.max_iterations or DEFAULT_MAX_ITERATIONS
    threshold = args.threshold or run_config.threshold or DEFAULT_THRESHOLD
    approval = args.approval or run_config.approval or "never"
    gateway = ctx.gateway()
    for config in agents.values():
        _check_model(gateway, config.model, args.queue)
    validate_run_settings(args.task, max_iterations, threshold)
    _check_priced(ctx, [a.model for a in agents.values()])
    registry = ctx.tools(run_config)
    tools = run_config.tools(registry, list(agents))
    for note in ctx.notes:  # only once the request is known to be valid
        print(note, file=sys.stderr)
    _label_offline([a.model for a in agents.values()])
    store = ctx.store(create=True)
    if args.queue:
        gateway.close()
        return _queued(ctx, [enqueue_run(
            store, args.task, agents=agents, max_iterations=max_iterations, threshold=threshold,
            research=run_config.research, tools=tools, registry=registry, approval=approval,
            budget_usd=args.budget_usd, budget_tokens=args.budget_tokens, sample=args.sample)])
    try:
        handle = start_run(store, args.task, agents=agents, max_iterations=max_iterations, threshold=threshold,
                           gateway=gateway, research=run_config.research, tools=tools, registry=registry,
                           approval=approval, budget=Budget(ctx.prices()), budget_usd=args.budget_usd,
                           budget_tokens=args.budget_tokens, sample=args.sample, **_watch(args.quiet))
        if not args.quiet:
            print(f"run {handle.run_id} (log: {ctx.db_shown})", file=sys.stderr)
        code = _finish(ctx, store, _wait(handle))
    finally:
        gateway.close()
    if args.otlp:
        _send_trace(ctx, store, [handle.run_id], after_run=True)
    return code


def _check_queue(args: argparse.Namespace) -> None:
    """What needs the run's end in this process cannot go with ``--queue``."""
    if not getattr(args, "queue", False):
        return
    for flag, given in (("--out", getattr(args, "out", None)), ("--otlp", getattr(args, "otlp", None))):
        if given:
            raise UsageError(f"{flag} needs the run's end in this process; with --queue a worker drives it "
                             f"(then: agentlog show RUN, agentlog trace RUN)")


def _check_model(gateway: Gateway, model: str, queued: bool) -> None:
    """A model must be reachable from here, or, for a queued run, at least be a model name:
    the worker that drives it brings the endpoint and the key."""
    if queued:
        parse_model(model)
    else:
        gateway.check(model)


def _queued(ctx: Context, run_ids: Sequence[str]) -> int:
    """Report queued runs: each id on stdout (for scripts), how to drive them on stderr."""
    for run_id in run_ids:
        print(run_id)
    if run_ids and not getattr(ctx.args, "quiet", False):
        # A command to copy: never with a password, nor a redacted URL that would log in with '***'.
        where = "" if not ctx.args.db else " --db URL (or $AGENTLOG_DB)" if is_postgres(ctx.args.db) else \
            f" --db {ctx.db_shown}"
        print(f"queued {len(run_ids)} run(s) in {ctx.db_shown}; a worker drives them: agentlog worker{where}",
              file=sys.stderr)
    return 0


def _check_otlp(args: argparse.Namespace) -> None:
    """A malformed ``--otlp`` URL or timeout is refused before anything runs."""
    if not args.otlp:
        return
    from .tracing import traces_endpoint

    traces_endpoint(args.otlp)
    if not args.otlp_timeout > 0:  # also refuses nan
        raise UsageError(f"--otlp-timeout must be a positive number of seconds, got {args.otlp_timeout}")


def _send_trace(ctx: Context, store: Store, run_ids: Sequence[str], *, after_run: bool = False) -> int:
    from .tracing import TraceError, export_runs

    args = ctx.args
    try:
        count = export_runs([(r, store.read(r)) for r in run_ids], args.otlp, with_content=args.with_content,
                            timeout=args.otlp_timeout)
    except TraceError as exc:
        _err(f"{exc}; the run is recorded as it was" if after_run else str(exc))
        return EXIT_FAILED
    if not getattr(args, "quiet", False):
        print(f"sent {count} spans of {len(run_ids)} run(s) to the OTLP receiver", file=sys.stderr)
    return 0


def cmd_trace(ctx: Context) -> int:
    _check_otlp(ctx.args)
    store = ctx.store()
    run_ids = list(dict.fromkeys(_run_id(store, r) for r in ctx.args.runs))
    return _send_trace(ctx, store, run_ids)


def cmd_runs(ctx: Context) -> int:
    store = ctx.store(read_only=True)
    runs = store.list_runs(status=ctx.args.status, text=ctx.args.search, limit=ctx.args.limit)
    costs = _costs(store, [r.run_id for r in runs], ctx.prices())
    owners = _owners(store, runs)
    if ctx.args.json:
        print(json.dumps([msgspec.to_builtins(r) | _cost_fields(costs.get(r.run_id))
                          | {"owner": owners.get(r.run_id)} for r in runs], indent=2))
        return 0
    if not runs:
        if ctx.args.status or ctx.args.search:
            print("no runs match (see all with `agentlog runs`)", file=sys.stderr)
        else:
            print("no runs yet: start one with `agentlog run TASK`", file=sys.stderr)
        return 0
    print(render.runs_table(runs, costs, owners))
    total = store.count_runs(status=ctx.args.status, text=ctx.args.search)
    if total > len(runs):
        print(f"({len(runs)} of {total} runs; --limit N for more)", file=sys.stderr)
    return 0


def _owners(store: Store, runs: Sequence[RunSummary]) -> dict[str, str]:
    """Who drives each unfinished run: the owner (host:pid) of its live lease."""
    owners = {}
    for r in runs:
        if r.status not in ("queued", "running"):
            continue
        try:
            lease = store.lease(r.run_id)
        except StoreError:  # a log older than leases: nobody holds one
            return {}
        if lease is not None and lease.live(time.time()):
            owners[r.run_id] = lease.owner
    return owners


def cmd_worker(ctx: Context) -> int:
    """Claim queued runs and drive them until SIGTERM (exit 0) or Ctrl-C (130), handing back
    what is in hand at its next step boundary; a second signal stops the runs where they are."""
    import signal

    from .worker import Worker

    args = ctx.args
    if not is_postgres(ctx.db):
        ctx.db_file()  # an SQLite log must exist: a worker never creates one
    store = ctx.store()
    tools = ctx.tools()
    gateway = ctx.gateway()
    quiet = args.quiet

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    worker = Worker(store, concurrency=args.concurrency, gateway=gateway, tools=tools, prices=ctx.prices(),
                    poll=args.poll, say=say)
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        worker.stop(at_once=len(signals) > 1)
        if len(signals) == 1:
            say(f"worker {worker.owner}: stopping; handing back the runs in hand at their next step "
                f"(signal again to stop them where they are)")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        say(f"worker {worker.owner}: driving queued runs of {ctx.db_shown}, {args.concurrency} at a time")
        stats = worker.run(idle_exit=args.idle_exit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        gateway.close()
    say(f"worker {worker.owner}: {stats.claimed} claimed, {stats.finished} finished, {stats.failed} failed, "
        f"{stats.handed_back + stats.stopped} handed back")
    return EXIT_INTERRUPTED if signals and signals[0] == signal.SIGINT else 0


def _run_id(store: Store, text: str) -> str:
    return store.resolve_run_id(text)


def cmd_show(ctx: Context) -> int:
    store = ctx.store(read_only=True)
    run_id = _run_id(store, ctx.args.run)
    stored = store.read(run_id)
    if ctx.args.json:
        for s in stored:
            print(json.dumps(render.stored_to_builtins(s)))
        return 0
    cost = run_cost((s.event for s in stored), ctx.prices())
    print(render.show(store.get_run(run_id), build_view(run_id, stored), cost))
    return 0


def cmd_replay(ctx: Context) -> int:
    store = ctx.store(read_only=True)
    run_id = _run_id(store, ctx.args.run)
    stored = store.read(run_id)
    view = build_view(run_id, stored)
    cost = run_cost((s.event for s in stored), ctx.prices())
    if ctx.args.json:
        print(json.dumps(view.to_builtins() | {"cost": msgspec.to_builtins(cost)}, indent=2))
    else:
        print(render.replay(view, cost))
    return 0


def _cost_fields(cost: Any) -> dict[str, Any]:
    """A run's cost for JSON: ``null`` USD means a price is unknown (``unpriced`` names the models)."""
    if cost is None:  # a damaged log
        return {"cost_usd": None, "saved_usd": None, "unpriced": []}
    return {"cost_usd": cost.spent_usd, "saved_usd": cost.saved_usd, "unpriced": cost.unpriced}


def _overrides(ctx: Context) -> Overrides:
    args = ctx.args
    return Overrides(
        models=dict(args.model), temperatures=dict(getattr(args, "temperature", [])),
        max_iterations=getattr(args, "max_iterations", None), threshold=getattr(args, "threshold", None),
        approval=getattr(args, "approval", None),
        budget_usd=getattr(args, "budget_usd", None), budget_tokens=getattr(args, "budget_tokens", None),
    )


def _continue(ctx: Context, start: Callable[[Store, Gateway], RunHandle], models: Sequence[str]) -> int:
    gateway = ctx.gateway()
    for model in models:
        gateway.check(model)
    store = ctx.store()
    try:
        handle = start(store, gateway)
        if not ctx.args.quiet:
            print(f"run {handle.run_id} (log: {ctx.db_shown})", file=sys.stderr)
        return _finish(ctx, store, _wait(handle))
    finally:
        gateway.close()


def _models_in_use(store: Store, run_id: str, overrides: Overrides, upto: int | None = None) -> list[str]:
    view = build_view(run_id, store.read(run_id, upto=upto))
    _check_agents({**overrides.models, **overrides.temperatures}, list(view.agents))  # before any model
    return [overrides.models.get(name, a.model) for name, a in view.agents.items()]


def cmd_resume(ctx: Context) -> int:
    ctx.check_out()
    store = ctx.store()
    run_id = _run_id(store, ctx.args.run)
    summary = store.get_run(run_id)
    if summary.status == "finished":
        print(f"run {run_id} already finished; nothing to resume (fork it to continue with other "
              f"settings: agentlog fork {run_id} --at SEQ ...)", file=sys.stderr)
        return 0
    check_free(store, run_id)  # before anything is printed: a refusal is one line
    question = waiting(run_id, store.read(run_id))
    if question is not None:
        for line in render.waiting_lines(run_id, question.iteration, question.point):
            _err(line)
        return EXIT_WAITING
    overrides = _overrides(ctx)
    models = _models_in_use(store, run_id, overrides)
    _check_priced(ctx, models)
    _label_offline(models)
    tools = ctx.tools()
    return _continue(ctx, lambda s, g: resume(s, run_id, overrides=overrides, gateway=g, tools=tools,
                                              budget=Budget(ctx.prices()), **_watch(ctx.args.quiet)), models)


def cmd_fork(ctx: Context) -> int:
    _check_queue(ctx.args)
    ctx.check_out()
    store = ctx.store()
    run_id = _run_id(store, ctx.args.run)
    last = store.last_seq(run_id)
    if not ctx.args.at <= last:  # before any model is resolved
        raise UsageError(f"--at must be an event of run {run_id}: 1 to {last}, not {ctx.args.at}")
    overrides = _overrides(ctx)
    models = _models_in_use(store, run_id, overrides, upto=ctx.args.at)  # the events after --at may be damaged
    _check_priced(ctx, models)
    _label_offline(models)
    if ctx.args.queue:
        for model in models:
            parse_model(model)  # the worker's gateway reaches it
        return _queued(ctx, [enqueue_fork(store, run_id, ctx.args.at, overrides=overrides)])
    tools = ctx.tools()
    if not ctx.args.quiet:
        print(f"forking run {run_id} at event {ctx.args.at}", file=sys.stderr)
    return _continue(ctx, lambda s, g: fork(s, run_id, ctx.args.at, overrides=overrides, gateway=g, tools=tools,
                                            budget=Budget(ctx.prices()), **_watch(ctx.args.quiet)), models)


def _read_draft(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the draft {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"the draft {path} is not UTF-8 text") from None


def cmd_decide(ctx: Context) -> int:
    """``approve``, ``edit`` and ``reject``: record a person's decision, then continue the run."""
    args = ctx.args
    decision = args.command
    draft = _read_draft(args.draft) if decision == "edit" else None
    store = ctx.store()
    run_id = _run_id(store, args.run)
    question = waiting(run_id, store.read(run_id))
    if question is None:
        raise NotWaiting(f"run {run_id} is not waiting for a person (it is {store.get_run(run_id).status})")
    models: list[str] = []
    tools = None
    if not args.no_continue:  # check that the run can go on before the decision is recorded
        models = _models_in_use(store, run_id, Overrides())
        tools = ctx.tools()
    gateway = ctx.gateway() if not args.no_continue else None
    try:
        for model in models:
            gateway.check(model)  # type: ignore[union-attr]
        seq = decide_run(store, run_id, decision, by=args.by, note=args.note or "", draft=draft)
        verb = {"approve": "approved", "edit": "replaced", "reject": "sent back"}[decision]
        print(f"recorded: draft {question.iteration} of run {run_id} {verb} (event {seq})", file=sys.stderr)
        if args.no_continue:
            print(f"continue the run with: agentlog resume {run_id}", file=sys.stderr)
            return 0
        assert gateway is not None
        _label_offline(models)
        handle = resume(store, run_id, gateway=gateway, tools=tools, **_watch(args.quiet))
        return _finish(ctx, store, _wait(handle))
    finally:
        if gateway is not None:
            gateway.close()


def cmd_rereview(ctx: Context) -> int:
    args = ctx.args
    store = ctx.store()
    run_ids = list(dict.fromkeys(_run_id(store, r) for r in args.runs))
    for run_id in run_ids:  # a damaged run is refused before any re-review starts
        store.read(run_id)
    gateway = ctx.gateway()
    _check_model(gateway, args.model, args.queue)
    _label_offline([args.model])
    if args.queue:
        gateway.close()
        queued = []
        for run_id in run_ids:
            new_id = enqueue_rereview(store, run_id, args.model)
            if new_id is None:
                _err(f"run {run_id} has no drafts to review; skipped")
            else:
                queued.append(new_id)
        return _queued(ctx, queued)
    handles: list[tuple[str, RunHandle]] = []
    try:
        for run_id in run_ids:
            handle = start_rereview(store, run_id, args.model, gateway=gateway)
            if handle is None:
                _err(f"run {run_id} has no drafts to review; skipped")
                continue
            handles.append((run_id, handle))
        rows, failed = [], 0
        for source, handle in handles:
            summary = _wait(handle)
            new_view = build_view(summary.run_id, store.read(summary.run_id))
            old_view = build_view(source, store.read(source))
            if new_view.status == "failed":
                failed += 1
                _err(f"re-review of {source} ({summary.run_id}) failed: {new_view.failure}")
            old_scores = {r.iteration: r.review.score for r in old_view.reviews}
            for review in new_view.reviews:
                rows.append(render.RereviewRow(source, summary.run_id, review.iteration,
                                               old_scores.get(review.iteration), review.review.score))
    finally:
        gateway.close()
    if args.json:
        print(json.dumps([msgspec.to_builtins(r) for r in rows], indent=2))
    else:
        print(render.rereview_table(rows, args.model))
    return EXIT_FAILED if failed else 0


def cmd_verify(ctx: Context) -> int:
    store = ctx.store(read_only=True)
    if ctx.args.all:
        run_ids = [r.run_id for r in store.list_runs()]
    elif ctx.args.runs:
        run_ids = [_run_id(store, r) for r in ctx.args.runs]
    else:
        raise UsageError("name the runs to verify, or pass --all")
    # A run that cannot be read is said in one line (exit 2) and the others are still verified:
    # a check of a thousand runs reports on all of them, not up to the first damaged one.
    results, damaged = [], []
    for run_id in run_ids:
        try:
            results.append(verify(run_id, store.read(run_id)))
        except DamagedEvent as exc:
            damaged.append(exc)
    if ctx.args.json:
        print(json.dumps([msgspec.to_builtins(r) | {"ok": r.ok} for r in results], indent=2))
    else:
        for result in results:
            print(render.verify_line(result))
    for exc in damaged:
        _err(str(exc))
    if damaged:
        return EXIT_USAGE
    return 0 if all(r.ok for r in results) else EXIT_FAILED


def cmd_export(ctx: Context) -> int:
    store = ctx.store(read_only=True)
    run_id = _run_id(store, ctx.args.run)
    for s in store.read(run_id):
        # The data is today's encoding of the (upcast) event: it is written with today's version.
        type_name, version, data = encode(s.event)
        print(json.dumps({"run_id": s.run_id, "seq": s.seq, "type": type_name, "version": version,
                          "data": json.loads(data)}))
    return 0


def cmd_import(ctx: Context) -> int:
    path = Path(ctx.args.file)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    streams: dict[str, list[Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            event = decode(row["type"], int(row["version"]), json.dumps(row["data"]))
            streams.setdefault(row["run_id"], []).append((int(row["seq"]), event))
        except (ValueError, KeyError, TypeError, CodecError) as exc:
            raise UsageError(f"{path}:{number}: not an exported event ({exc})") from None
    if not streams:
        raise UsageError(f"{path} holds no events")
    for run_id, events in streams.items():
        seqs = [seq for seq, _ in events]
        if seqs != list(range(1, len(seqs) + 1)):
            raise UsageError(f"{path}: run {run_id} does not hold events 1..{len(seqs)} in order")
        if not isinstance(events[0][1], RunStarted):
            raise UsageError(f"{path}: run {run_id} does not start with RunStarted (it starts with "
                             f"{type(events[0][1]).__name__})")
    store = ctx.store(create=True)
    try:  # every run or none
        store.append_all([(run_id, [e for _, e in events], 0) for run_id, events in streams.items()])
    except ConcurrencyError as exc:
        raise UsageError(f"run {exc.run_id} already exists in {ctx.db_shown}; nothing was imported") from None
    for run_id, events in streams.items():
        print(f"imported run {run_id} ({len(events)} events)", file=sys.stderr)
    return 0


def _same_log(a: str, b: str) -> bool:
    """Whether two ``--db`` values name one log: the same file, or the same database URL."""
    try:
        pa, pb = sqlite_path(a), sqlite_path(b)
    except StoreURLError:
        return a == b
    try:
        return pa.resolve() == pb.resolve() or (pa.exists() and pb.exists() and os.path.samefile(pa, pb))
    except OSError:
        return False


def cmd_copy(ctx: Context) -> int:
    from .store.copy import copy_log

    source, dest = ctx.args.source, ctx.args.dest
    if _same_log(source, dest):
        raise UsageError(f"--from and --to name the same log ({redact(source)}); nothing to copy")
    src = open_store(source, create=False, read_only=True)
    try:
        dst = open_store(dest, create=True)
    except BaseException:
        src.close()
        raise
    with src, dst:
        def report(copied: Any) -> None:
            if copied.events:
                print(f"copied run {copied.run_id}: {copied.events} events (up to event {copied.last_seq}, "
                      f"{copied.status})", file=sys.stderr)
            if copied.status == "running":
                print(f"note: run {copied.run_id} is running at the source; copy again later to bring the "
                      f"rest", file=sys.stderr)

        done = copy_log(src, dst, report)
    events = sum(c.events for c in done)
    fresh = sum(1 for c in done if c.events)
    print(f"copied {events} events of {fresh} run{'' if fresh == 1 else 's'} from {redact(source)} to "
          f"{redact(dest)}; {len(done) - fresh} already up to date")
    return 0


def cmd_watch(ctx: Context) -> int:
    from .store.follow import follow, waker

    store = ctx.store(read_only=True)
    run_id = _run_id(store, ctx.args.run)
    print(f"watching run {run_id} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    summary = None
    with waker(store) as wait:
        for item in follow(store, run_id, wait=wait):
            if isinstance(item, RunSummary):
                summary = item
                break
            for stored in item:
                print(render.watch_line(stored), flush=True)
    assert summary is not None
    view = build_view(run_id, store.read(run_id))
    if summary.status == "waiting" and view.waiting_for is not None:
        for line in render.waiting_lines(run_id, view.waiting_for, view.waiting_point or "final"):
            print(line, flush=True)
        return EXIT_WAITING
    if summary.status == "failed":
        print(f"run {run_id} failed: {view.failure}", flush=True)
        return EXIT_FAILED
    print(render.outcome_line(view, run_cost((s.event for s in store.read(run_id)), ctx.prices())), flush=True)
    return 0


def cmd_serve(ctx: Context) -> int:
    from . import web

    db_file = ctx.db if is_postgres(ctx.db) else str(ctx.db_file())
    ctx.store(read_only=True).close()  # fail early, in one line, on a log that cannot be read
    try:
        if ctx.args.read_only:
            web.serve(db_file, host=ctx.args.host, port=ctx.args.port, read_only=True, prices=ctx.prices())
            return 0
        # Runs a person unblocks in the browser go on in this process, with these models and tools.
        gateway = ctx.gateway()
        try:
            web.serve(db_file, host=ctx.args.host, port=ctx.args.port, gateway=gateway, tools=ctx.tools(),
                      prices=ctx.prices())
        finally:
            gateway.close()
    except web.ListenError as exc:  # a busy port is bad input (exit 2), not another writer (3)
        raise UsageError(str(exc)) from None
    return 0


def cmd_vacuum(ctx: Context) -> int:
    if not is_postgres(ctx.db):
        ctx.db_file()  # an SQLite log must exist: vacuum never creates one
    report = ctx.store().vacuum(dry_run=ctx.args.dry_run)
    packs = f"{report.packs} pack{'' if report.packs == 1 else 's'}"
    what = f"{report.pack_bytes:,} bytes: {packs} of text no event refers to"
    if ctx.args.dry_run:
        print(f"would free {what}")
    elif report.packs:
        print(f"freed {what}; file {report.file_before:,} -> {report.file_after:,} bytes")
    else:
        print("nothing to free: every stored text is referred to")
    return 0


COMMANDS: dict[str, Callable[[Context], int]] = {
    "run": cmd_run, "runs": cmd_runs, "show": cmd_show, "replay": cmd_replay, "resume": cmd_resume,
    "fork": cmd_fork, "rereview": cmd_rereview, "verify": cmd_verify, "export": cmd_export,
    "import": cmd_import, "trace": cmd_trace, "serve": cmd_serve, "approve": cmd_decide, "edit": cmd_decide,
    "reject": cmd_decide, "vacuum": cmd_vacuum, "sweep": cmd_sweep, "worker": cmd_worker, "copy": cmd_copy,
    "watch": cmd_watch,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        ctx = Context(args, load_config())
        if args.command in ("run", "resume", "fork", "rereview", "worker"):
            lease_seconds()  # a bad AGENTLOG_LEASE_SECONDS is refused before anything is done
        return COMMANDS[args.command](ctx)
    except (UsageError, ConfigError, ModelNotConfigured, ModelNameError, ReplayError, UnknownPipeline) as exc:
        # NotWaiting (a ReplayError) lands here too: deciding on a run that does not wait, or
        # losing a race to another person's decision, is exit 2 like any decision that cannot be taken.
        _err(str(exc))
        return EXIT_USAGE
    except ValueError as exc:  # validation of run settings
        _err(str(exc))
        return EXIT_USAGE
    except RunAborted as exc:
        _err(str(exc))
        return EXIT_FAILED
    except ConcurrencyError as exc:
        _err(f"{exc}. Another process is running or resuming this run; nothing was changed by this one.")
        return EXIT_CONFLICT
    except (StoreBusy, LeaseHeld, LeaseLost) as exc:
        _err(str(exc))
        return EXIT_CONFLICT
    except StoreError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()


def _stdout_closed() -> int:
    """The reader of stdout went away (``agentlog export RUN | head -1``): it had what it wanted,
    so that is no error (exit 0). Later writes, and the flush at exit, go to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def entry() -> None:
    """Console-script entry point."""
    code = main()
    # Agent threads blocked in an HTTP call after Ctrl-C must not keep the process alive.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed()
    sys.stderr.flush()
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
