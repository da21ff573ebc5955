"""A local, read-only web viewer for the event log: runs, run timelines, live runs, comparisons.

``create_app(db_path)`` builds the Starlette app; ``serve(db_path)`` runs it with uvicorn on
127.0.0.1. Everything is read through the store's asyncio face; nothing is ever written.
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
