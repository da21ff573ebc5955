"""The viewer's routes: a small Starlette app that reads the log through the asyncio face.

One route writes: a person's decision on a waiting run (``decisions.py``), unless the app
is read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlog.models import Gateway
from agentlog.models.prices import PriceTable
from agentlog.replay.approval import default_decider
from agentlog.store import AmbiguousRunId, RunNotFound, SchemaError, StoreError, redact
from agentlog.store.aio import AsyncReads
from agentlog.store.opening import open_async_store
from agentlog.store.url import is_postgres, sqlite_path
from agentlog.tools import ToolRegistry

from . import assets, live, queries, render
from .decisions import Decisions, Refused, Tokens, check_origin, parse_form

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: with no-referrer a browser posts forms with `Origin: null`,
    # and the decision route checks the Origin. Other sites still get no referrer.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class SecurityHeaders:
    """Adds the CSP and friends to every response, errors included."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def check_database_file(db_path: str) -> None:
    """Refuse what opening would create or initialise: the viewer must never write the log.
    (A PostgreSQL log is opened in a read-only session, which refuses it by itself.)"""
    if is_postgres(db_path):
        return
    path = sqlite_path(db_path)
    if not path.is_file():
        raise SchemaError(f"no agentlog database at {db_path}: run a pipeline first, or pass --db PATH")
    if path.stat().st_size == 0:
        raise SchemaError(f"{db_path} is empty, not an agentlog database")


async def _check_opens(db_path: str) -> None:
    store = await open_async_store(db_path)
    await store.close()


def create_app(db_path: str, *, allowed_hosts: Sequence[str] = LOOPBACK_NAMES,
               page_size: int = queries.PAGE_SIZE, read_only: bool = False, gateway: Gateway | None = None,
               tools: ToolRegistry | None = None, prices: PriceTable | None = None) -> Starlette:
    """The viewer over the agentlog log at ``db_path`` (a path, or a ``postgresql://`` URL),
    which must exist. Pages show the URL without its password.

    Pages only read. Unless ``read_only``, a waiting run's page offers a person's decisions
    (approve, edit, reject), the one write; the run then continues here with ``gateway``
    and ``tools`` (without a gateway the decision is recorded and `agentlog resume` continues).

    ``allowed_hosts`` guards against DNS rebinding: a page elsewhere cannot read the log
    through a name that resolves to 127.0.0.1. Pass ``("*",)`` when serving on other interfaces.
    ``prices`` prices the tokens runs spent (default: the default price table).
    """
    db_path = str(db_path)
    shown_db = redact(db_path)
    check_database_file(db_path)
    decisions = None if read_only else Decisions(db_path, Tokens(), gateway, tools, default_decider())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_async_store(db_path)
        app.state.store = store
        app.state.decisions = decisions
        try:
            yield
        finally:
            if decisions is not None:
                await asyncio.to_thread(decisions.stop)
            await store.close()

    def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(render.layout(title, body, shown_db), status_code=status_code)

    async def resolve(store: AsyncReads, prefix: str) -> str:
        return await store.resolve_run_id(prefix.strip())

    async def runs(request: Request) -> Response:
        params = request.query_params
        try:
            number = int(params.get("page", "1"))
        except ValueError:
            number = 1
        result = await queries.runs_page(request.app.state.store, status=params.get("status", ""),
                                         text=params.get("q", "").strip(), page=number, page_size=page_size)
        return page("Runs", render.runs_page(result))

    async def run(request: Request) -> Response:
        store = request.app.state.store
        try:
            run_id = await resolve(store, request.path_params["run_id"])
        except (RunNotFound, AmbiguousRunId) as exc:
            return page("Not found", render.error_page(str(exc)), 404)
        shown = await queries.load_run(store, run_id, prices)
        form = ""
        if decisions is not None and shown.view.waiting_for is not None:
            form = render.decision_form(shown, decisions.tokens.make(run_id, shown.view.last_seq),
                                        decisions.default_by)
        return page(f"Run {run_id}", render.run_page(
            shown, await queries.ancestors(store, run_id), await queries.children(store, run_id), form))

    async def decide(request: Request) -> Response:
        """A person's decision from a run page's form; then back to the page, which follows the run."""
        assert decisions is not None
        run_id = request.path_params["run_id"]
        try:
            check_origin(request.headers.get("origin"), request.headers.get("host"))
            form = parse_form(await request.body())
            unblocked = await asyncio.to_thread(decisions.decide, run_id, form)
        except Refused as exc:
            return page("Decision not recorded", render.decision_refused(run_id, str(exc)), exc.status)
        if unblocked is not None:
            return page("Decision recorded", render.decision_recorded(run_id, unblocked))
        return RedirectResponse(render.run_url(run_id), status_code=303)

    async def run_events(request: Request) -> Response:
        """What a live run page needs after the events it shows: new timeline rows and fresh sections."""
        store = request.app.state.store
        try:
            after = max(0, int(request.query_params.get("after", "0")))
            shown = await queries.load_run(store, request.path_params["run_id"], prices)
        except ValueError:
            return JSONResponse({"error": "after must be an event number"}, status_code=400)
        except RunNotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        new = [r for r in shown.view.timeline if r.seq > after]
        damaged = render.damaged_row(shown) if shown.damage and shown.damage.seq > after else ""
        return JSONResponse({
            "status": shown.summary.status,
            "last_seq": shown.last_seq,
            "rows": "".join(render.timeline_row(r, shown) for r in new) + damaged,
            "summary": render.summary_items(shown),
            "sections": render.sections(shown) if new else {},
        })

    async def run_stream(request: Request) -> Response:
        """The run's answers as they stream (server-sent events), until the run ends."""
        store = request.app.state.store
        try:
            run_id = await resolve(store, request.path_params["run_id"])
        except (RunNotFound, AmbiguousRunId) as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return StreamingResponse(live.partial_answer_events(store, run_id), media_type="text/event-stream")

    async def compare(request: Request) -> Response:
        store = request.app.state.store
        a, b = request.query_params.get("a", "").strip(), request.query_params.get("b", "").strip()
        if not (a and b):
            return page("Compare", render.compare_form(a, b))
        try:
            ids = [await resolve(store, a), await resolve(store, b)]
        except (RunNotFound, AmbiguousRunId) as exc:
            return page("Compare", render.compare_form(a, b, str(exc)), 404)
        va, vb = [await queries.load_run(store, r, prices) for r in ids]
        return page(f"Compare {ids[0][:8]} and {ids[1][:8]}", render.compare_page(va, vb))

    async def sweeps(request: Request) -> Response:
        return page("Sweeps", render.sweeps_page(await queries.sweeps(request.app.state.store)))

    async def sweep(request: Request) -> Response:
        try:
            comparison = await queries.load_sweep(request.app.state.store, request.path_params["sweep_id"].strip(),
                                                  prices)
        except LookupError as exc:
            return page("Not found", render.error_page(str(exc)), 404)
        return page(f"Sweep {comparison.sweep_id}", render.sweep_page(comparison))

    def static(content: str, media_type: str):
        async def endpoint(request: Request) -> Response:
            return Response(content, media_type=media_type)
        return endpoint

    async def not_found(request: Request, exc: Exception) -> Response:
        return page("Not found", render.error_page(f"nothing at {request.url.path}"), 404)

    async def unavailable(request: Request, exc: Exception) -> Response:
        # The log's server went away (or the file became unreadable): one line, no traceback;
        # the next request reads again (a PostgreSQL log reconnects once the server is back).
        return page("Log unavailable", render.error_page(f"the log cannot be read now: {exc}"), 503)

    routes = [
        Route("/", runs),
        Route("/runs/{run_id}", run),
        Route("/runs/{run_id}/events", run_events),
        *([Route("/runs/{run_id}/decision", decide, methods=["POST"])] if decisions is not None else []),
        Route("/runs/{run_id}/stream", run_stream),
        Route("/compare", compare),
        Route("/sweeps", sweeps),
        Route("/sweeps/{sweep_id}", sweep),
        Route("/static/viewer.css", static(assets.CSS, "text/css; charset=utf-8")),
        Route("/static/viewer.js", static(assets.JS, "text/javascript; charset=utf-8")),
        Route("/favicon.ico", static(assets.ICON, "image/svg+xml")),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if "*" not in allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={404: not_found, StoreError: unavailable})


class ListenError(OSError):
    """The viewer cannot listen where it was asked to: a busy port, an address not of this machine."""


def allowed_hosts_for(host: str) -> tuple[str, ...]:
    """The ``Host`` names a viewer bound to ``host`` answers to. Bound to a loopback address
    (any of 127.0.0.0/8, ``::1``, or a name that resolves only to them), only loopback names
    and the address itself: a page elsewhere cannot read the log by DNS rebinding. Bound to
    any other interface, every name."""
    literal = host.strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(literal, None, proto=socket.IPPROTO_TCP)}
        loopback = bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except (OSError, ValueError):
        loopback = False
    if not loopback:
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, "[::1]", f"[{literal}]" if ":" in literal else literal.lower())))


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; ``ListenError`` in one line if it cannot be had."""
    shown = f"[{host}]" if ":" in host else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(db_path: str, host: str = "127.0.0.1", port: int = 8765, *, read_only: bool = False,
          gateway: Gateway | None = None, tools: ToolRegistry | None = None, prices: PriceTable | None = None) -> None:
    """Serve the viewer until Ctrl-C. Binds the loopback interface unless told otherwise.

    On any other interface the viewer is read-only: its one write path has no login.
    """
    import uvicorn

    hosts = allowed_hosts_for(host)
    loopback = "*" not in hosts
    if not loopback and not read_only:
        read_only = True
        print("agentlog viewer: read-only, since it is served beyond this machine (decide from the terminal)",
              flush=True)
    app = create_app(db_path, allowed_hosts=hosts, read_only=read_only, gateway=gateway, tools=tools,
                     prices=prices)
    # A file that is not an agentlog database fails here, as one StoreError, not in uvicorn's startup.
    asyncio.run(_check_opens(db_path))
    sock = listen(host, port)  # a busy port is one ListenError, not uvicorn's log and exit
    try:
        shown = f"[{host}]" if ":" in host else host
        mode = "reading" if read_only else "reading, and recording decisions in,"
        print(f"agentlog viewer: http://{shown}:{port}/  ({mode} {redact(db_path)}; Ctrl-C to stop)", flush=True)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws="none", lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
