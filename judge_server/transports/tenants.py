"""API keys and the tenants they belong to.

The server is configured with SHA-256 digests of keys, never the keys (``ARENA_API_KEYS``: a
JSON object ``{"tenant": ["<64 hex digits>", ...]}``; ``arena-judge hash-key`` prints the
digest of a key read from standard input). A request carries its key as a bearer token: the
``authorization`` header (HTTP) or metadata (gRPC), ``Bearer <key>``. The key is hashed and
looked up; neither the key nor its digest is logged. The OpenRLHF route also takes the key
as ``?api_key=`` (OpenRLHF sends no headers), which request lines would show:
:class:`RedactKeys`, a logging filter the server puts on uvicorn's loggers and on its log
handlers, writes ``api_key=[redacted]`` (and ``Bearer [redacted]``) in every record, at every
level.

Without keys the server is open: every caller may use every run (tenant ``None``: no checks).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence

from ..errors import Unauthenticated

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
REDACTED = "[redacted]"
# A key in a query string (``?api_key=...``, also in a scope's ``b'api_key=...'``) or a
# bearer token (an ``authorization`` header in a repr).
_SECRETS = re.compile(
    r"(?i)((?<![\w-])(?:api[_-]?key|access[_-]?token|token)=|\bbearer\s+)[^\s&#'\"]+"
)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key: what the server's configuration holds."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_api_keys(api_keys: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """``{digest: tenant}`` from ``{tenant: [digest, ...]}``; ValueError naming what is wrong."""
    owners: dict[str, str] = {}
    for tenant, digests in api_keys.items():
        if not tenant or not tenant.strip():
            raise ValueError("a tenant name must not be empty")
        if isinstance(digests, str):
            raise ValueError(f"tenant {tenant!r}: give a list of SHA-256 digests")
        for k, digest in enumerate(digests):
            digest = digest.strip().lower()
            if not _DIGEST.match(digest):
                raise ValueError(
                    f"tenant {tenant!r} key {k}: not a SHA-256 hex digest (64 hex digits); "
                    "configure digests of keys, not keys (arena-judge hash-key)"
                )
            if owners.setdefault(digest, tenant) != tenant:
                raise ValueError(f"tenant {tenant!r} key {k}: the same key is another tenant's")
    return owners


class Authenticator:
    """Tells which tenant a request's ``authorization`` value belongs to."""

    def __init__(self, api_keys: Mapping[str, Sequence[str]] | None = None) -> None:
        self._owners = check_api_keys(api_keys or {})

    @property
    def open(self) -> bool:
        """True when no keys are configured: no caller is checked."""
        return not self._owners

    @property
    def tenants(self) -> set[str]:
        return set(self._owners.values())

    def tenant(self, authorization: str | None) -> str | None:
        """The tenant of ``authorization`` (``"Bearer <key>"``); None on an open server.

        Raises :class:`Unauthenticated` for a missing, malformed or unknown key.
        """
        if self.open:
            return None
        if not authorization:
            raise Unauthenticated()
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization: expected 'Bearer <API key>'")
        tenant = self._owners.get(hash_key(key.strip()))
        if tenant is None:
            raise Unauthenticated("authorization: unknown API key")
        return tenant


def redact_keys(text: str) -> str:
    """``text`` with the value of every ``api_key=`` (``api-key``, ``apikey``,
    ``access_token``, ``token``) parameter and every bearer token replaced by
    ``[redacted]``."""
    return _SECRETS.sub(lambda m: m.group(1) + REDACTED, text)


class RedactKeys(logging.Filter):
    """Redacts API keys (:func:`redact_keys`) in a record's message and arguments.

    Arguments keep their place (uvicorn's access formatter unpacks them): a string is
    redacted; another value whose text holds a key (a request's scope) becomes its redacted
    text. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_keys(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redacted(arg) for key, arg in record.args.items()}
        return True


def _redacted(value: object) -> object:
    if isinstance(value, str):
        return redact_keys(value)
    if isinstance(value, (bytes, Mapping, list, tuple)):
        text = str(value)
        redacted = redact_keys(text)
        return value if redacted == text else redacted
    return value


__all__ = ["REDACTED", "Authenticator", "RedactKeys", "check_api_keys", "hash_key",
           "redact_keys"]
