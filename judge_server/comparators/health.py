"""Is a judge answering? One watch per judge, so that a hung judge is given up once, for
every batch at the same moment, rather than batch by batch (:class:`~.model.ModelComparator`
runs every LLM judge's calls under it).

A judge server takes ``max_concurrency`` requests at a time; the rest of every batch waits for
a connection (an in-process engine's batches queue in the engine, or for its worker thread).
Were a hung judge given up per batch (no answer to *this* batch for a while), batches would
wait one after another and the time to fail them would grow with their number.
The watch sees the judge as a whole:

- a judge is **silent** when it has had requests to answer (sent, retrying, or waiting for a
  connection) without answering any for ``stall_s``. Every batch waiting on it then gives up
  together, and the watch **trips**;
- for ``cooldown_s`` after a trip the judge is **down**: a new batch fails at once, without a
  request. After it the next batch is sent as usual and is the probe: an answer shows the judge
  is back; another ``stall_s`` of silence trips the watch again.

An answer is any sign of progress: an HTTP response (an error status too) or a refused
connection (the judge, or its host, reacted; a request timing out is not an answer, nor is a
retry); a prompt an in-process engine finishes, an engine call that returns, a forward pass.

Pure bookkeeping, no I/O: the clock is a parameter, so tests step it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class JudgeWatch:
    """Silence and down time of one judge (module doc)."""

    def __init__(
        self, stall_s: float, cooldown_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if stall_s <= 0 or cooldown_s < 0:
            raise ValueError("stall_s must be positive and cooldown_s not negative")
        self.stall_s = stall_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.trips = 0
        self._outstanding = 0  # requests the judge owes: on the wire, retrying or queued
        self._quiet_since = 0.0  # the last answer, or when the judge last had work again
        self._down_until = float("-inf")

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def asked(self) -> None:
        """A request is owed (it waits for a connection, or is on its way)."""
        if self._outstanding == 0:
            self._quiet_since = self.clock()  # an idle judge is not silent
        self._outstanding += 1

    def settled(self) -> None:
        """A request is no longer owed (answered, failed or cancelled)."""
        if self._outstanding <= 0:
            raise RuntimeError("settled() without asked()")
        self._outstanding -= 1

    def answered(self) -> None:
        """The judge reacted to a request: it is not hung."""
        self._quiet_since = self.clock()

    def deadline(self) -> float:
        """When the judge will be silent, on :attr:`clock`, if nothing answers before."""
        return self._quiet_since + self.stall_s

    def silent(self) -> bool:
        """The judge owes answers and has given none for ``stall_s``."""
        return self._outstanding > 0 and self.clock() >= self.deadline()

    def trip(self) -> None:
        """The judge is taken as down: new batches fail at once for ``cooldown_s``. (Every
        batch waiting sees :meth:`silent` too; the first to wake trips it for all.)"""
        if self.down_for() == 0.0:
            self.trips += 1
        self._down_until = self.clock() + self.cooldown_s

    def down_for(self) -> float:
        """Seconds left before a batch is sent to the judge again (0: it is up)."""
        return max(0.0, self._down_until - self.clock())


__all__ = ["JudgeWatch"]
