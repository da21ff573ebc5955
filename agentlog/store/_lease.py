"""Pure parts of the lease operations, shared by the sync and async faces (the SQL is in schema)."""

from __future__ import annotations

import math

from .errors import LeaseHeld, LeaseLost
from .records import Lease


def check_ttl(ttl: float) -> float:
    if not (isinstance(ttl, (int, float)) and math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"a lease lasts a positive, finite number of seconds, not {ttl!r}")
    return float(ttl)


def holder(run_id: str, row: tuple | None) -> Lease | None:
    """The lease a ``SELECT_LEASE`` row describes; ``None`` if there is none or it was released."""
    if row is None or row[0] is None:
        return None
    owner, token, expires_at = row
    return Lease(run_id, owner, token, expires_at)


def claim(run_id: str, owner: str, ttl: float, take_over: int | None, row: tuple | None, now: float) -> Lease:
    """The lease ``owner`` gets, given the run's current ``SELECT_LEASE`` row.

    Refused (``LeaseHeld``) while another live holder has it, unless the caller names that
    holder's token in ``take_over`` (it judged the holder dead). The token always grows.
    """
    current = holder(run_id, row)
    if current is not None and current.live(now) and current.token != take_over:
        raise LeaseHeld(run_id, current.owner, current.expires_at)
    token = (row[1] if row is not None else 0) + 1
    return Lease(run_id, owner, token, now + check_ttl(ttl))


def holds(token: int, found: tuple | None) -> bool:
    """Whether an append under lease ``token`` may commit, given the run's ``LEASE_TOKEN`` row."""
    return found is not None and found[0] == token


def lost(run_id: str, token: int, row: tuple | None) -> LeaseLost:
    """The error for a writer whose lease ``token`` is gone, given the run's ``SELECT_LEASE`` row."""
    current = holder(run_id, row)
    return LeaseLost(run_id, token, current.owner if current else None)
