"""The comparator interface: the model behind the judge.

A comparator answers batches of comparisons. Each comparison shows the judge one prompt, an
optional reference, and two traces in a given order; the answer is ``p``, the probability that
the trace shown first is the better one, in [0, 1]. Everything is async and batched so that
model-backed comparators (vLLM, SGLang, OpenAI-compatible servers, transformers) can send a
whole tournament round, across every group in flight, to the engine at once.

A comparator raises :class:`judge_server.errors.JudgeError` when it cannot answer; the service
turns that into a per-group failure, never a crash. A verdict that the judge gave but that could
not be read (an LLM judge whose verdict tokens are missing from the log-probabilities it
returned) is answered with :data:`UNREAD`: a float equal to ``0.5`` (no preference) for any
caller, that the service recognises with :func:`is_unread` and counts per run, whatever the
backend. Wrappers pass an answer on as they got it (:func:`as_verdict`), so that it stays
recognisable.

A judge that fails some comparisons of a batch and answers the others raises
:class:`FailedComparisons` (a :class:`JudgeError`) with the answers it has and the failure of
each comparison that has none: the scheduler fails only the rounds (groups) that needed those.

A verdict cache in front of a judge answers some comparisons without asking it. The service
counts those apart (a group's ``cached_comparisons`` against its ``judge_requests``), so the
scheduler asks for :meth:`Comparator.compare_with_hits`: the answers and, for each, whether a
cache gave it (:class:`Answers`), and how many requests each took (retries included). By
default no answer is cached; only a cache (:class:`~.cached.CachedComparator`) overrides it,
and a comparator that implements
:meth:`~Comparator.compare` alone needs nothing more.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import JudgeError

NO_PREFERENCE = 0.5


class Unread(float):
    """The answer to a comparison whose verdict could not be read: ``p = 0.5``, marked."""

    __slots__ = ()

    def __new__(cls) -> Unread:
        return super().__new__(cls, NO_PREFERENCE)

    def __repr__(self) -> str:
        return "UNREAD"

    def __reduce__(self) -> tuple:
        return (Unread, ())


UNREAD = Unread()


def is_unread(p: float) -> bool:
    """True when ``p`` is the answer to a verdict that could not be read (:data:`UNREAD`)."""
    return isinstance(p, Unread)


def as_verdict(p: float) -> float:
    """``float(p)``, except that :data:`UNREAD` stays itself."""
    return p if isinstance(p, Unread) else float(p)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One question for the judge: is ``first`` better reasoning than ``second``?"""

    prompt: str
    first: str
    second: str
    reference: str | None = None
    run_id: str = ""
    # Set when the run must not share the judge engine's prefix cache with other runs: a
    # judge on vLLM passes it as the request's ``cache_salt``; judges without a prefix cache
    # shared across requests ignore it.
    cache_salt: str | None = None


class Answers(NamedTuple):
    """One batch's answers: ``p[i]`` for comparison ``i``, ``cached[i]`` when a verdict cache
    gave it (then no request for it reached the judge), and ``requests[i]``: the requests the
    judge received for it, retries included (``None``: one per answer not cached)."""

    p: list[float]
    cached: list[bool]
    requests: list[int] | None = None

    def requests_each(self) -> list[int]:
        """``requests``, or one per answer not cached when the judge did not say."""
        if self.requests is not None:
            return list(self.requests)
        return [0 if hit else 1 for hit in self.cached]


class FailedComparisons(JudgeError):
    """Some comparisons of a batch failed: ``errors[i]`` is comparison ``i``'s failure
    (``None`` where it was answered) and ``answers`` the batch's answers (``p`` is
    :data:`NO_PREFERENCE` where it failed), with the requests each took."""

    def __init__(self, answers: Answers, errors: Sequence[JudgeError | None]) -> None:
        failed = [e for e in errors if e is not None]
        first = failed[0] if failed else "none"
        super().__init__(f"{len(failed)} of {len(errors)} comparisons failed: {first}")
        self.answers = answers
        self.errors = list(errors)


class Comparator(abc.ABC):
    """Answers comparisons. Subclasses implement :meth:`compare`; the rest has defaults."""

    name: str = "comparator"
    batch_limit: int | None = None
    """The most comparisons the judge works on at once (``None``: no limit). The scheduler
    sends no larger batches: a larger one would queue inside the comparator in arrival order,
    out of reach of the fair scheduler."""

    @abc.abstractmethod
    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        """Return one ``p = P(first is better)`` in [0, 1] per comparison, in order
        (:data:`UNREAD` for a verdict that could not be read)."""

    async def compare_with_hits(self, comparisons: Sequence[Comparison]) -> Answers:
        """:meth:`compare`, and which of its answers a verdict cache gave: none, unless the
        comparator is a cache (:class:`~.cached.CachedComparator` overrides this)."""
        p = await self.compare(comparisons)
        return Answers(p, [False] * len(p), [1] * len(p))

    def set_run_template(self, run_id: str, template: str | None) -> None:
        """Judge ``run_id``'s comparisons with its own prompt template (``None``: the
        server's). A judge that uses no prompt refuses a template with ``ValueError``."""
        if template:
            raise ValueError(f"the {self.name} judge uses no prompt template")

    def forget_run(self, run_id: str) -> int | None:
        """Drop whatever the judge keeps for a run (its template, cached verdicts); a judge
        may return how many entries it dropped."""

    async def check_health(self) -> bool:
        """True when the comparator can answer now (the model is loaded, the server is up)."""
        return True

    async def aclose(self) -> None:
        """Release engines, connection pools and worker processes."""


__all__ = [
    "NO_PREFERENCE",
    "UNREAD",
    "Answers",
    "Comparator",
    "Comparison",
    "FailedComparisons",
    "Unread",
    "as_verdict",
    "is_unread",
]
