"""Rank one dead group: its tournament against the judge, the fit, the advantages.

What the judge does for a dead group, top to bottom, with no transport, store or statistics:
the service hands in the group, its run's settings, the pool anchors drawn for it and a way to
ask the judge (``ask``: one round of comparisons in, their verdicts and which of them a
verdict cache gave out), and gets back the result and what the pool and the run's statistics
need (:class:`Ranked`).

1. The tournament of the run's design is built on the group's traces (items ``0 .. G-1``) and
   the anchors (items ``G ..``), seeded by the run, the group and the texts, so that the same
   group is ranked the same way.
2. Round by round its presentations go to the judge as :class:`Comparison` s; the verdicts are
   recorded. A judge failure ends the group as ``judge_failed`` with the advantages it would
   have had without the judge (zeros) and its cost: the rounds answered before it and the
   round that failed (its comparisons, and the requests the judge received for them).

A result's ``judge_requests`` counts every request the judge received for the group, retries
included (HTTP retries, malformed answers asked again), apart from ``comparisons`` (what the
tournament needed) and ``cached_comparisons`` (what a verdict cache answered): without
retries, ``judge_requests == comparisons - cached_comparisons``.
3. The Bradley-Terry fit gives the traces' strengths; :func:`.advantages.from_strengths` turns
   them into advantages. A judge that preferred nothing in any verdict gives zeros (``tied``):
   anchors alone must not tell the traces apart.
4. The last line: a result with a number that is not finite (an advantage, a strength or a
   standard error; :func:`non_finite`) is a judge failure too, never an answer with NaN or
   infinity. Checked input cannot get there; the guard stays for what checks cannot foresee.

The design's selection and the fit are CPU work (at G = 1024, tens of milliseconds a round and
up to half a second a fit): for a tournament of at least :data:`THREAD_ITEMS` items they run in
a worker thread, so that the event loop (both transports, every other group) keeps answering.
Only one step of a tournament runs at a time, in the same order, so the results are the same
wherever it runs; small groups stay on the loop, where a thread hop would cost more than the
work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trainer_client.types import Group, GroupResult, RunSettings

from ..comparators.base import NO_PREFERENCE, Answers, Comparison, FailedComparisons, is_unread
from ..errors import JudgeError
from . import advantages
from .pools import Anchor
from .tournaments import Verdict, make_tournament

Ask = Callable[[list[Comparison]], Awaitable[Answers]]
"""One round's comparisons to the judge; their verdicts, and which a verdict cache gave."""

THREAD_ITEMS = 128
"""Tournaments of at least this many items (traces and anchors) select rounds and fit in a
worker thread (at 128 items a round's selection takes about a millisecond)."""


@dataclass(frozen=True, eq=False)
class Ranked:
    """A dead group's result, and what the service does with it next."""

    result: GroupResult
    strengths: np.ndarray  # the traces' fitted strengths (empty when the judge failed)
    stderr: np.ndarray
    preferred: bool  # whether any verdict preferred a side: only then may the traces enter the pool
    unread: int  # verdicts that could not be read (taken as no preference)


def seed(*parts: str) -> int:
    """A stable 64-bit seed from strings."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


async def rank_dead_group(
    group: Group, settings: RunSettings, anchors: Sequence[Anchor], ask: Ask, *,
    max_budget: int | None = None,
) -> Ranked:
    """Play ``group``'s tournament with ``anchors`` against the judge behind ``ask``, in at
    most ``max_budget`` judge calls (the server's), whatever the run's or its design's budget."""
    run_id, n = settings.run_id, len(group.traces)
    texts = [t.text for t in group.traces] + [a.text for a in anchors]
    tournament = make_tournament(
        settings.design,
        n,
        budget=settings.budget or None,
        max_budget=max_budget,
        min_tau_gain=settings.min_tau_gain,
        order=settings.order,
        anchor_strengths=[a.strength for a in anchors],
        anchor_stderr=[a.stderr for a in anchors],
        anchor_mode=settings.anchor_mode,
        lam=settings.lam,
        rng=np.random.default_rng(seed(run_id, group.group_id, *texts)),
    )
    salt = seed(run_id, "prefix cache").to_bytes(8, "little").hex()
    rounds = cached = requests = unread = 0
    preferred = False
    off_loop = tournament.n_items >= THREAD_ITEMS
    try:
        while pairs := (
            await asyncio.to_thread(tournament.next_round) if off_loop
            else tournament.next_round()
        ):
            rounds += 1
            answered = await ask([
                Comparison(
                    prompt=group.prompt, first=texts[i], second=texts[j],
                    reference=group.reference, run_id=run_id,
                    cache_salt=salt if settings.isolate_prefix_cache else None,
                )
                for i, j in pairs
            ])
            answers = answered.p
            unread += sum(map(is_unread, answers))
            preferred = preferred or any(p != NO_PREFERENCE for p in answers)
            tournament.record(Verdict(i, j, p) for (i, j), p in zip(pairs, answers))
            cached += sum(answered.cached)
            requests += sum(answered.requests_each())
    except JudgeError as exc:
        # The failed round was needed too; its requests are known when the judge failed
        # some comparisons only (a judge that failed as a whole may have received none).
        failed = exc.answers if isinstance(exc, FailedComparisons) else None
        cost = GroupResult(
            group_id=group.group_id, advantages=(0.0,) * n, routed=True,
            comparisons=tournament.calls + len(pairs),
            cached_comparisons=cached + (sum(failed.cached) if failed else 0),
            judge_requests=requests + (sum(failed.requests_each()) if failed else 0),
            rounds=rounds, anchors_used=len(anchors),
        )
        return _judge_failed(cost, str(exc), unread)
    cost = GroupResult(
        group_id=group.group_id, advantages=(0.0,) * n, routed=True,
        comparisons=tournament.calls, cached_comparisons=cached, judge_requests=requests,
        rounds=rounds, anchors_used=len(anchors),
    )
    try:
        fit = await asyncio.to_thread(tournament.fit) if off_loop else tournament.fit()
        strengths, stderr = fit.strengths[:n], fit.stderr[:n]
        adv = advantages.from_strengths(
            strengths,
            normalisation=settings.normalisation,
            scale=settings.scale,
            covariance=None if fit.covariance is None else fit.covariance[:n, :n],
            stderr=stderr,
        )
    except FloatingPointError as exc:  # the fit's own check of its strengths
        return _judge_failed(cost, f"{NOT_FINITE}: {exc}", unread)
    if not preferred:
        adv = np.zeros(n)
    result = dataclasses.replace(
        cost, advantages=tuple(adv.tolist()), strengths=tuple(strengths.tolist()),
        stderr=tuple(stderr.tolist()), tied=not adv.any(),
    )
    if (where := non_finite(result)) is not None:
        return _judge_failed(cost, f"{NOT_FINITE}: {where}", unread)
    return Ranked(result, strengths, stderr, preferred, unread)


NOT_FINITE = "the fit of the judge's verdicts is not finite"


def non_finite(result: GroupResult) -> str | None:
    """The first number of ``result``'s advantages, strengths and standard errors that is not
    finite, named (``"strengths[2] = nan"``); None when every one is.

    The last line before an answer leaves: checked input keeps every number finite (bounded
    rewards, ``lam``, ``scale`` and budget), but an answer must never carry NaN or infinity
    (JSON ``null``) whatever a judge, a stored pool or a future change does."""
    for name in ("advantages", "strengths", "stderr"):
        for i, value in enumerate(getattr(result, name)):
            if not math.isfinite(value):
                return f"{name}[{i}] = {value}"
    return None


def _judge_failed(cost: GroupResult, error: str, unread: int) -> Ranked:
    """A judge failure (``cost``: the group's cost so far): the advantages the group would have
    had without the judge (zeros), no fit; the pool takes none of its traces."""
    result = dataclasses.replace(cost, advantages=(0.0,) * len(cost.advantages), strengths=(),
                                 stderr=(), tied=False, status="judge_failed", error=error)
    return Ranked(result, np.zeros(0), np.zeros(0), False, unread)


__all__ = ["NOT_FINITE", "THREAD_ITEMS", "Ask", "Ranked", "non_finite", "rank_dead_group", "seed"]
