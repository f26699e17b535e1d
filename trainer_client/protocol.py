"""The wire contract, public: what the trainer client and the judge server both speak.

    from trainer_client.protocol import arena_pb2, arena_pb2_grpc, RunSettings

The proto (``protos/reasoning_arena/v1/arena.proto``) is the one source of the wire types;
``arena_pb2`` (messages) and ``arena_pb2_grpc`` (``ArenaStub``, ``ArenaServicer``,
``add_ArenaServicer_to_server``) are its generated stubs, committed under the private
``trainer_client._proto`` by ``python scripts/gen_protos.py``: import them from here. The plain
dataclasses of :mod:`trainer_client.types` are what both sides compute with; a run setting is
a field of :class:`RunSettings` and of the proto's ``RunSettings``, with the same name (a test
keeps the two, and the HTTP bodies derived from the dataclass, the same set).

The pure conversions both sides need are here too: :func:`settings_to_proto`, and
:func:`parse_retry_after` (the ``Retry-After`` header, read by the client from the server and
by the server from an HTTP judge). No I/O.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import time

from ._proto.reasoning_arena.v1 import arena_pb2, arena_pb2_grpc
from .types import Group, GroupResult, RunSettings, Trace

SERVICE_NAME: str = arena_pb2.DESCRIPTOR.services_by_name["Arena"].full_name
"""The Arena service's full name, ``reasoning_arena.v1.Arena``."""


def settings_to_proto(settings: RunSettings) -> arena_pb2.RunSettings:
    """A run's settings as the proto's ``RunSettings`` (the field names are the same)."""
    return arena_pb2.RunSettings(**dataclasses.asdict(settings))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds (fractions allowed)
    or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


__all__ = [
    "SERVICE_NAME",
    "Group",
    "GroupResult",
    "RunSettings",
    "Trace",
    "arena_pb2",
    "arena_pb2_grpc",
    "parse_retry_after",
    "settings_to_proto",
]
