"""A local web viewer for the event log: runs, run timelines, live runs, comparisons, and a
person's decisions on waiting runs.

``create_app(db_path)`` builds the Starlette app; ``serve(db_path)`` runs it with uvicorn on
127.0.0.1. Pages read through the store's read-only asyncio face; the one write is a
person's decision (POST, per-page token), off with ``read_only=True``.
"""

from .app import ListenError, allowed_hosts_for, create_app, serve

__all__ = ["ListenError", "allowed_hosts_for", "create_app", "serve"]
