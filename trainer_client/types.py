"""Plain data shared by the trainer client and the judge server: no I/O, no dependencies.

A *group* is the G traces a policy sampled for one prompt, each with its verifiable reward.
The judge answers each group with a :class:`GroupResult`: one advantage per trace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trace:
    """One sampled reasoning trace and the verifier's reward for it."""

    text: str
    reward: float


@dataclass(frozen=True, slots=True)
class Group:
    """The traces sampled for one prompt.

    ``prompt_id`` identifies the prompt across training steps (it keys the anchor pool);
    ``reference`` is an optional reference answer or worked solution shown to the judge;
    ``step`` is the trainer's step (anchors remember it); ``request_id`` is a client-made id
    that makes a retried group idempotent.
    """

    group_id: str
    traces: tuple[Trace, ...]
    prompt_id: str = ""
    prompt: str = ""
    reference: str | None = None
    step: int | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class GroupResult:
    """The judge's answer for one group.

    ``routed`` says whether the group was dead and went to the judge. ``status`` is ``"ok"``,
    or ``"judge_failed"`` when the judge could not answer: then ``advantages`` are what the
    trainer would have had without the judge (zeros for a dead group) and ``error`` says why.
    ``strengths`` and ``stderr`` are the Bradley-Terry fit of the traces (empty when not routed).
    ``status`` ``"overloaded"``: the server refused the group for load; it may be sent again
    after ``retry_after_s`` seconds.
    ``tied``: the judge ranked the group (``status="ok"``) but told its traces apart in
    nothing (it expressed no preference, or the fit left every trace level): the advantages
    are all zero, and the dead group was not rescued.

    What the group cost the judge: ``comparisons``, the comparisons its tournament needed (on
    ``"judge_failed"``, those of the rounds asked up to and with the failed one), of which
    ``cached_comparisons`` a verdict cache answered (a question answered before, one already
    at the judge for another group, or a repeat sent once); ``judge_requests``: the requests
    the judge received for the group, retries included (HTTP retries, malformed answers asked
    again), so ``comparisons == cached_comparisons + judge_requests`` when there were none. A server
    without a verdict cache reports no cached comparisons. ``judge_calls``: the deprecated
    name of ``comparisons`` (read-only).
    """

    group_id: str
    advantages: tuple[float, ...]
    routed: bool
    strengths: tuple[float, ...] = ()
    stderr: tuple[float, ...] = ()
    comparisons: int = 0
    cached_comparisons: int = 0
    judge_requests: int = 0
    rounds: int = 0
    anchors_used: int = 0
    status: str = "ok"
    error: str = ""
    latency_ms: float = 0.0
    retry_after_s: float = 0.0
    tied: bool = False

    @property
    def judge_calls(self) -> int:
        """Deprecated: ``comparisons``. It counted every comparison the tournament needed,
        cached or not, which the name hid; ``judge_requests`` counts what reached the judge."""
        return self.comparisons


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How the judge treats one training run's groups. Every field has a working default.

    design            tournament design: adaptive, live, round_robin, single_anchor, swiss
    budget            maximum judge calls per group; 0 for the design's default
    min_tau_gain      adaptive design: end a group's tournament early once a round is expected
                      to raise its Kendall tau by less than this per call (0: play the budget)
    order             "random" (each pair once, random order) or "both" (both orders)
    normalisation     strengths to advantages: evidence (as large as the judge's evidence,
                      |a| <= scale), minmax (the paper's), zscore, raw
    scale             multiplies judge-derived advantages
    lam               Bradley-Terry prior precision
    dead_eps          a group is dead when max(reward) - min(reward) <= dead_eps
    divide_by_std     non-dead groups: (r - mean) / std (True) or r - mean (False)
    anchors_per_group pool anchors drawn into each tournament (0, the default: no pool; at
                      equal judge calls anchors lower the order found within a group)
    anchor_mode       "prior" (anchors move within their own calibrated uncertainty) or
                      "fixed" (held at their stored strengths)
    pool_per_prompt   anchors kept per prompt
    pool_per_run      anchors kept per run, all prompts together
    pool_max_age      steps after which an anchor leaves the pool
    judge_template    the run's own judge prompt template ("" for the server's; LLM judges only)
    weight            the run's share of the judge when runs compete for it (fair queuing)
    max_calls_in_flight  most comparisons of the run at the judge at once (0: server's cap)
    isolate_prefix_cache  salt the judge engine's prefix cache with the run (vLLM), so that
                      no other run shares cached prompt prefixes with it
    """

    run_id: str
    design: str = "adaptive"
    budget: int = 0
    min_tau_gain: float = 0.0
    order: str = "random"
    normalisation: str = "evidence"
    scale: float = 1.0
    lam: float = 1.0
    dead_eps: float = 1e-6
    divide_by_std: bool = True
    anchors_per_group: int = 0
    anchor_mode: str = "prior"
    pool_per_prompt: int = 8
    pool_per_run: int = 100_000
    pool_max_age: int = 100
    judge_template: str = ""
    weight: float = 1.0
    max_calls_in_flight: int = 0
    isolate_prefix_cache: bool = False


__all__ = ["Group", "GroupResult", "RunSettings", "Trace"]
