"""From the verdict token's log-probabilities to ``p = P(first trace is better)``.

The judge model writes one token after the prompt: ``A`` (the first trace is more sound) or
``B``. With ``P(A)`` and ``P(B)`` the probabilities of the two verdict tokens at that position,

    p = P(A) / (P(A) + P(B)) = sigmoid(logprob(A) - logprob(B))

renormalised over the two verdicts, whatever else the model would have written.

Where the log-probabilities come from, best first:

by id
    the engine returns the log-probabilities of exactly the two verdict token ids (vLLM
    ``logprob_token_ids``, SGLang ``token_ids_logprob``, our own forward pass): always both.
top-k
    the engine returns its ``k`` most likely next tokens (a server whose tokenizer we do not
    know, an OpenAI-compatible API without vLLM's extensions). Every listed token whose text,
    stripped of surrounding white space, is the verdict letter counts for it (``"A"`` and
    ``" A"`` are both the verdict A).

    **Missing verdicts.** A verdict absent from the list gets the largest probability it can
    have: the list holds the ``k`` most likely tokens, so the missing one is no more likely
    than the least likely listed token, and the probabilities of all tokens sum to one, so it
    is no more likely than what the listed ones leave::

        P(missing) <= min(min P(listed), 1 - sum P(listed))

    The verdict is thus never more confident than the evidence, and as confident as it allows:
    with only ``A`` listed, at log-probability ``-1e-4``, ``P(B) <= 1e-4`` and
    ``p ~ 0.9999`` (a top-1 list says as much as that). When neither verdict is listed,
    nothing is known: ``p = 0.5`` (no preference), answered as :data:`~.base.UNREAD` so
    that the service counts it per run, and counted by the comparator (``stats.undecided``):
    a judge that often writes neither verdict needs another prompt or more ``top_logprobs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .base import NO_PREFERENCE, UNREAD


def verdict_probability(logprob_a: float, logprob_b: float) -> float:
    """``sigmoid(logprob_a - logprob_b)``, stable; 0.5 when both are ``-inf`` or not numbers."""
    if not (math.isfinite(logprob_a) or math.isfinite(logprob_b)):
        if logprob_a == math.inf and logprob_b != math.inf:
            return 1.0
        if logprob_b == math.inf and logprob_a != math.inf:
            return 0.0
        return NO_PREFERENCE
    if math.isnan(logprob_a) or math.isnan(logprob_b):
        return NO_PREFERENCE
    diff = logprob_a - logprob_b
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    z = math.exp(diff)
    return z / (1.0 + z)


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


@dataclass(frozen=True, slots=True)
class TopVerdict:
    """The verdict read from a top-k list: ``p`` (:data:`~.base.UNREAD` when neither verdict
    was listed) and whether each verdict was listed."""

    p: float
    found_a: bool
    found_b: bool

    @property
    def undecided(self) -> bool:
        return not (self.found_a or self.found_b)


def verdict_from_top(
    entries: Iterable[tuple[str | int, float]],
    a: str | int,
    b: str | int,
) -> TopVerdict:
    """``p`` from ``(token, logprob)`` entries (token texts, or ids) of a top-k list.

    Text tokens match a verdict when they equal its letter after stripping white space; ids
    match exactly. A missing verdict gets its upper bound (module docstring).
    """
    listed: list[float] = []
    for_a: list[float] = []
    for_b: list[float] = []
    want_a = a.strip() if isinstance(a, str) else a
    want_b = b.strip() if isinstance(b, str) else b
    for token, logprob in entries:
        logprob = float(logprob)
        if math.isnan(logprob):
            continue
        listed.append(logprob)
        key = token.strip() if isinstance(token, str) else token
        if key == want_a:
            for_a.append(logprob)
        elif key == want_b:
            for_b.append(logprob)
    if not for_a and not for_b:
        return TopVerdict(UNREAD, False, False)
    bound = _missing_bound(listed)
    lp_a = _logsumexp(for_a) if for_a else bound
    lp_b = _logsumexp(for_b) if for_b else bound
    return TopVerdict(verdict_probability(lp_a, lp_b), bool(for_a), bool(for_b))


def _missing_bound(listed: list[float]) -> float:
    """The log of ``min(min P(listed), 1 - sum P(listed))``: the most an unlisted token may
    have (``-inf`` when the listed tokens leave nothing)."""
    left = 1.0 - math.fsum(math.exp(lp) for lp in listed)
    rest = math.log(left) if left > 0 else -math.inf
    return min(min(listed), rest)


@dataclass
class JudgeStats:
    """Counters of a model-backed comparator (read them, or :meth:`snapshot` them).

    ``comparisons``: verdicts given; ``by_id`` / ``by_top``: read from the verdict tokens'
    own log-probabilities / from a top-k list; ``undecided``: neither verdict in the top-k
    list (``p = 0.5``, :data:`~.base.UNREAD`); ``partial``: one verdict missing from it (read
    with its bound); ``prompt_tokens`` and
    ``cached_prompt_tokens``: as the engine reported them, over ``reported_tokens``
    comparisons (the engines that report them); ``calls``: HTTP requests made, retries
    included; ``retries``: HTTP retries; ``malformed_retries``: prompts asked again after a
    malformed answer.
    """

    comparisons: int = 0
    by_id: int = 0
    by_top: int = 0
    undecided: int = 0
    partial: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    reported_tokens: int = 0
    calls: int = 0
    retries: int = 0
    malformed_retries: int = 0

    def add_top(self, verdict: TopVerdict) -> float:
        self.comparisons += 1
        self.by_top += 1
        if verdict.undecided:
            self.undecided += 1
        elif not (verdict.found_a and verdict.found_b):
            self.partial += 1
        return verdict.p

    def add_ids(self, logprob_a: float, logprob_b: float) -> float:
        self.comparisons += 1
        self.by_id += 1
        return verdict_probability(logprob_a, logprob_b)

    def add_tokens(self, prompt_tokens: int | None, cached_tokens: int | None) -> None:
        """Count one comparison's prompt tokens and how many of them the engine had cached."""
        if prompt_tokens is None:
            return
        self.reported_tokens += 1
        self.prompt_tokens += int(prompt_tokens)
        self.cached_prompt_tokens += int(cached_tokens or 0)

    def snapshot(self) -> dict:
        return dict(vars(self))


__all__ = [
    "NO_PREFERENCE",
    "JudgeStats",
    "TopVerdict",
    "verdict_from_top",
    "verdict_probability",
]
