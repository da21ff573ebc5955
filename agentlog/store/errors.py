"""The store's own exceptions: every sqlite3 error leaves the store as one of these."""

from agentlog.events import CodecError


class StoreError(Exception):
    """Base class for event-log errors."""


class ConcurrencyError(StoreError):
    """Another writer appended to the run since ``expected_seq``: this writer is stale."""

    def __init__(self, run_id: str, expected_seq: int, actual_seq: int):
        self.run_id, self.expected_seq, self.actual_seq = run_id, expected_seq, actual_seq
        super().__init__(
            f"run {run_id}: expected to append after event {expected_seq}, "
            f"but the stream is at {actual_seq} (another writer got there first)"
        )


class RunNotFound(StoreError):
    def __init__(self, run_id: str, hint: str = ""):
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in this log{hint}")


class AmbiguousRunId(StoreError):
    pass


class SchemaError(StoreError):
    """The file is not an agentlog database this release can use."""


class DamagedEvent(StoreError, CodecError):
    """A stored event this release cannot read: its row is damaged, or from a newer agentlog.

    A ``CodecError`` too, for code that caught the codec's error before the store named the event."""

    def __init__(self, run_id: str, seq: int, reason: str):
        self.run_id, self.seq, self.reason = run_id, seq, reason
        super().__init__(f"run {run_id}, event {seq} cannot be read: {reason}")


class DiskFull(StoreError):
    """The disk (or the file system's quota) is full: nothing of the failed append was written."""


class LogUnavailable(StoreError):
    """The log's database cannot be reached, or stopped answering mid-write (a PostgreSQL
    server stopped or out of reach): the write in flight was not committed, nothing
    committed before it is lost, and ``resume`` continues once the database is back."""


class StoreBusy(StoreError):
    """The database stayed locked by another process longer than the busy timeout."""


def _when(expires_at: float) -> str:
    import time

    left = expires_at - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
    return f"{stamp}, in {left:.0f} s" if left > 0 else f"{stamp}, expired"


class LeaseHeld(StoreError):
    """Another owner holds a live lease on the run: this process must not drive it."""

    def __init__(self, run_id: str, owner: str, expires_at: float):
        self.run_id, self.owner, self.expires_at = run_id, owner, expires_at
        super().__init__(
            f"run {run_id} is being driven by {owner} (its lease expires at {_when(expires_at)}); "
            f"wait for it to end, or resume it once the lease has expired"
        )


class LeaseLost(StoreError):
    """This process's lease on the run was taken over (or released): it must stop writing."""

    def __init__(self, run_id: str, token: int, holder: str | None):
        self.run_id, self.token, self.holder = run_id, token, holder
        now = f"it is now held by {holder}" if holder else "nobody holds it now"
        super().__init__(
            f"run {run_id}: this process lost its lease (token {token}; {now}); it stopped without "
            f"sending anything further"
        )
