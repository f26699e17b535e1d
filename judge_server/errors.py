"""The judge server's exceptions, one tree.

    ArenaError
    ├── InvalidRequest      (also a ValueError) bad input; names the field at fault
    ├── RunNotFound         the run does not exist and runs must be created first
    ├── RunExists           create_run for a run id that is taken
    ├── JudgeError          the comparator (the model behind the judge) failed
    ├── StoreError          the store could not read or write; nothing was silently lost
    ├── Unauthenticated     no API key, or an unknown one (the server has keys)
    ├── PermissionDenied    the run belongs to another tenant
    ├── Overloaded          the server is at capacity: nothing was accepted; retry later
    └── ShuttingDown        the server drains: it takes no new groups (send them elsewhere)

Transports map each class to one status (HTTP) and one code (gRPC) in one table each and send
the message only: never a stack trace.
"""

from __future__ import annotations


class ArenaError(Exception):
    """Base class of every error the judge server raises on purpose."""


class InvalidRequest(ArenaError, ValueError):
    """Bad input. ``field`` is the path of the offending field, e.g. ``group.traces[3].reward``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class RunNotFound(ArenaError, LookupError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run_id: run {run_id!r} does not exist")
        self.field = "run_id"
        self.run_id = run_id


class RunExists(ArenaError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run_id: run {run_id!r} exists already")
        self.field = "run_id"
        self.run_id = run_id


class JudgeError(ArenaError):
    """The comparator failed (model server down, timeout, malformed response)."""


class StoreError(ArenaError):
    """The store failed to read or write."""


class Unauthenticated(ArenaError):
    """The request has no API key, or one the server does not know."""

    def __init__(self, message: str = "authorization: give an API key (Bearer token)") -> None:
        super().__init__(message)
        self.field = "authorization"


class PermissionDenied(ArenaError):
    """The caller's tenant does not own the run."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run_id: run {run_id!r} belongs to another tenant")
        self.field = "run_id"
        self.run_id = run_id


class Overloaded(ArenaError):
    """Refused for load before anything was accepted; ``retry_after_s``: when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(ArenaError):
    """The server is stopping: groups in flight finish, new ones are refused."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down and takes no new groups: send again")


__all__ = [
    "ArenaError",
    "InvalidRequest",
    "JudgeError",
    "Overloaded",
    "PermissionDenied",
    "RunExists",
    "RunNotFound",
    "ShuttingDown",
    "StoreError",
    "Unauthenticated",
]
