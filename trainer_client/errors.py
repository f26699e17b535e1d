"""The trainer client's exceptions, one tree.

    ArenaClientError
    ├── InvalidGroup         (also a ValueError) a group fails the local checks; names the field
    ├── InvalidConfig        (also a ValueError) a ClientConfig option is out of range
    ├── ClientClosed         (also a RuntimeError) the client was used after close()
    └── TransportError       one send to the judge failed; never escapes rank()
        ├── ServerUnavailable    nothing listens, the connection broke, UNAVAILABLE, 502/503/504
        ├── ServerOverloaded     RESOURCE_EXHAUSTED, 429 (``retry_after``: the server's hint)
        ├── ServerError          INTERNAL, UNKNOWN, 500: a fault on the server's side
        ├── DeadlineExceeded     the batch's deadline passed while waiting for the server
        ├── RequestRejected      the server refused the request (INVALID_ARGUMENT, 400, 404...)
        └── MalformedResponse    an answer that is not a valid result for the group sent

Only the first three reach the caller: :class:`InvalidGroup` and :class:`InvalidConfig` are
raised before anything is sent, :class:`ClientClosed` on use after ``close()``. The transports
map every gRPC status and HTTP failure to a :class:`TransportError` at one boundary
(``trainer_client._transports``), with ``raise ... from exc``; the client retries those that
are ``retryable`` and turns the rest into fallbacks whose ``reason`` is the error's ``reason``.
A judge failure therefore never stops training.
"""

from __future__ import annotations


class ArenaClientError(Exception):
    """Base class of every error the trainer client raises on purpose."""


class InvalidGroup(ArenaClientError, ValueError):
    """A group that cannot be ranked. ``field`` is its path, e.g. ``groups[2].traces[3].reward``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class InvalidConfig(ArenaClientError, ValueError):
    """A :class:`~trainer_client.ClientConfig` option out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class ClientClosed(ArenaClientError, RuntimeError):
    """The client was closed; make a new one."""

    def __init__(self, message: str = "the client is closed") -> None:
        super().__init__(message)


class TransportError(ArenaClientError):
    """One send failed. ``reason`` becomes the fallback reason of the groups it leaves without a
    result; ``retryable`` says whether sending again may help; ``retry_after`` is the server's
    hint in seconds (``None`` if it gave none)."""

    reason = "error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        group_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.group_id = group_id
        if reason is not None:
            self.reason = reason


class ServerUnavailable(TransportError):
    reason = "unavailable"
    retryable = True


class ServerOverloaded(TransportError):
    reason = "overloaded"
    retryable = True


class ServerError(TransportError):
    reason = "server_error"
    retryable = True


class DeadlineExceeded(TransportError):
    reason = "deadline"


class RequestRejected(TransportError):
    """Refused as invalid. ``group_id`` is set when the server named one group at fault: only
    that group falls back, the others are sent again."""

    reason = "invalid"


class MalformedResponse(TransportError):
    reason = "malformed"


__all__ = [
    "ArenaClientError",
    "ClientClosed",
    "DeadlineExceeded",
    "InvalidConfig",
    "InvalidGroup",
    "MalformedResponse",
    "RequestRejected",
    "ServerError",
    "ServerOverloaded",
    "ServerUnavailable",
    "TransportError",
]
