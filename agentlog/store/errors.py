"""The store's own exceptions: every sqlite3 error leaves the store as one of these."""


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


class StoreBusy(StoreError):
    """The database stayed locked by another process longer than the busy timeout."""
