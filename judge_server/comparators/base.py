"""The comparator interface: the model behind the judge.

A comparator answers batches of comparisons. Each comparison shows the judge one prompt, an
optional reference, and two traces in a given order; the answer is ``p``, the probability that
the trace shown first is the better one, in [0, 1]. Everything is async and batched so that
model-backed comparators (vLLM, SGLang, OpenAI-compatible servers, transformers) can send a
whole tournament round, across every group in flight, to the engine at once.

A comparator raises :class:`judge_server.errors.JudgeError` when it cannot answer; the service
turns that into a per-group failure, never a crash.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass


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


class Comparator(abc.ABC):
    """Answers comparisons. Subclasses implement :meth:`compare`; the rest has defaults."""

    name: str = "comparator"

    @abc.abstractmethod
    async def compare(self, comparisons: Sequence[Comparison]) -> list[float]:
        """Return one ``p = P(first is better)`` in [0, 1] per comparison, in order."""

    def set_run_template(self, run_id: str, template: str | None) -> None:
        """Judge ``run_id``'s comparisons with its own prompt template (``None``: the
        server's). A judge that uses no prompt refuses a template with ``ValueError``."""
        if template:
            raise ValueError(f"the {self.name} judge uses no prompt template")

    def forget_run(self, run_id: str) -> None:
        """Drop whatever the judge keeps for a run (its template, cached verdicts)."""

    async def check_health(self) -> bool:
        """True when the comparator can answer now (the model is loaded, the server is up)."""
        return True

    async def aclose(self) -> None:
        """Release engines, connection pools and worker processes."""


__all__ = ["Comparator", "Comparison"]
