"""The judge server's exceptions, one tree, and the one table of what each becomes on the wire.

    class                HTTP  gRPC code            meaning
    ArenaError           500   INTERNAL             base class (never raised as such)
    ├── InvalidRequest   400   INVALID_ARGUMENT     bad input; names the field at fault
    │                                               (also a ValueError)
    ├── RunNotFound      404   NOT_FOUND            the run does not exist and runs must be
    │                                               created first
    ├── RunExists        409   ALREADY_EXISTS       create_run for a run id that is taken
    ├── JudgeError       503   UNAVAILABLE          the comparator (the model behind the
    │                                               judge) failed
    ├── StoreError       503   UNAVAILABLE          the store could not read or write; nothing
    │                                               was silently lost
    ├── Unauthenticated  401   UNAUTHENTICATED      no API key, or an unknown one (the server
    │                                               has keys)
    ├── PermissionDenied 403   PERMISSION_DENIED    not raised for runs since each tenant has
    │                                               its own (another's id is RunNotFound)
    ├── Overloaded       429   RESOURCE_EXHAUSTED   the server is at capacity: nothing was
    │                                               accepted; retry later
    └── ShuttingDown     503   UNAVAILABLE          the server drains: it takes no new groups
                                                    (send them elsewhere)

Each class carries its row as class attributes: ``http_status`` and ``grpc_code`` (the name of
a ``grpc.StatusCode``, so that this module needs no grpc); the HTTP error body's ``code`` is
that name in lower case (``invalid_argument``). The transports read these attributes, have no
table of their own, and send the message only: never a stack trace. ``field`` is the path of
the field at fault, or None.
"""

from __future__ import annotations

from typing import ClassVar


class ArenaError(Exception):
    """Base class of every error the judge server raises on purpose."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"
    field: str | None = None

    @property
    def error_code(self) -> str:
        """The HTTP error body's ``code``: :attr:`grpc_code` in lower case."""
        return self.grpc_code.lower()


class InvalidRequest(ArenaError, ValueError):
    """Bad input. ``field`` is the path of the offending field, e.g. ``group.traces[3].reward``."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class RunNotFound(ArenaError, LookupError):
    http_status = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run_id: run {run_id!r} does not exist")
        self.field = "run_id"
        self.run_id = run_id


class RunExists(ArenaError):
    http_status = 409
    grpc_code = "ALREADY_EXISTS"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run_id: run {run_id!r} exists already")
        self.field = "run_id"
        self.run_id = run_id


class JudgeError(ArenaError):
    """The comparator failed (model server down, timeout, malformed response)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class StoreError(ArenaError):
    """The store failed to read or write."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class Unauthenticated(ArenaError):
    """The request has no API key, or one the server does not know."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"

    def __init__(self, message: str = "authorization: give an API key (Bearer token)") -> None:
        super().__init__(message)
        self.field = "authorization"


class PermissionDenied(ArenaError):
    """The caller's tenant does not own the run. Kept for clients and the error table: since
    each tenant's runs are a namespace of their own, the run registry never raises it (another
    tenant's run id is :class:`RunNotFound`, as an id that does not exist)."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run_id: run {run_id!r} belongs to another tenant")
        self.field = "run_id"
        self.run_id = run_id


class Overloaded(ArenaError):
    """Refused for load before anything was accepted; ``retry_after_s``: when to try again."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(ArenaError):
    """The server is stopping: groups in flight finish, new ones are refused."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

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
