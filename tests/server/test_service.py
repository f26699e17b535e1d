"""The service core with the simulated judge: no transport."""

import asyncio
import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import kendalltau

from judge_server.comparators.base import Comparator
from judge_server.comparators.cached import CachedComparator
from judge_server.comparators.simulated import SimulatedComparator
from judge_server.core.service import ArenaService
from judge_server.core.validation import Limits
from judge_server.errors import InvalidRequest, JudgeError, RunExists, RunNotFound, StoreError
from judge_server.store.memory import MemoryStore
from trainer_client.types import Group, RunSettings, Trace


def dead_group(group_id, strengths, *, prompt_id="p", reward=1.0, **kw):
    traces = tuple(
        Trace(f"{group_id} trace {k} strength={s}", reward) for k, s in enumerate(strengths)
    )
    return Group(group_id=group_id, prompt_id=prompt_id, prompt="2+2?", traces=traces, **kw)


POOL = RunSettings(run_id="default", anchors_per_group=3)  # the pool is off by default


def service(comparator=None, store=None, **kw):
    # ``is None``: a verdict cache has a length, so it is falsy while empty
    return ArenaService(
        comparator=SimulatedComparator() if comparator is None else comparator,
        store=store or MemoryStore(), **kw
    )


class FailingComparator(Comparator):
    name = "failing"

    def __init__(self, error=None):
        self.error = error or JudgeError("model server down")
        self.fail = True
        self.inner = SimulatedComparator()

    async def compare(self, comparisons):
        if self.fail:
            raise self.error
        return await self.inner.compare(comparisons)


class FailingStore(MemoryStore):
    async def update_anchors(self, run_id, prompt_id, update, *, per_run):
        raise StoreError("disk full")


async def test_dead_group_gets_zero_mean_advantages_in_the_judges_order():
    strengths = [0.5, -1.0, 2.0, 0.0, 1.2, -0.4]
    svc = service()
    await svc.create_run(RunSettings(run_id="r", design="round_robin", order="both"))
    (result,) = await svc.rank("r", [dead_group("g", strengths)])
    assert result.routed and result.status == "ok"
    assert result.judge_calls == 30
    assert sum(result.advantages) == pytest.approx(0.0, abs=1e-9)
    assert max(map(abs, result.advantages)) <= 1.0  # evidence (the default): |a| <= scale
    assert max(map(abs, result.advantages)) > 0.5  # a clear and certain order: large
    assert kendalltau(result.advantages, strengths).statistic == pytest.approx(1.0)
    assert len(result.strengths) == len(result.stderr) == 6


async def test_a_run_may_keep_the_papers_minmax_advantages():
    strengths = [0.5, -1.0, 2.0, 0.0, 1.2, -0.4]
    svc = service()
    await svc.create_run(RunSettings(run_id="r", design="round_robin", normalisation="minmax"))
    (result,) = await svc.rank("r", [dead_group("g", strengths)])
    assert max(result.advantages) - min(result.advantages) == pytest.approx(1.0)
    assert sum(result.advantages) == pytest.approx(0.0, abs=1e-9)
    b = np.array(result.strengths)
    assert result.advantages == pytest.approx((b - b.mean()) / np.ptp(b))


async def test_evidence_gives_a_weak_judge_small_advantages_and_minmax_does_not():
    svc = service(SimulatedComparator())
    close = [0.0, 0.1]  # the judge prefers the first by p = 0.525
    for norm in ("evidence", "minmax"):
        await svc.create_run(RunSettings(run_id=norm, normalisation=norm, anchors_per_group=0))
    (weak,) = await svc.rank("evidence", [dead_group("g", close)])
    (stretched,) = await svc.rank("minmax", [dead_group("g", close)])
    assert 0 < max(weak.advantages) < 0.01 and not weak.tied
    assert max(stretched.advantages) == pytest.approx(0.5)


async def test_diverse_group_gets_standard_group_relative_advantages():
    svc = service()
    group = Group("g", (Trace("a", 1.0), Trace("b", 0.0), Trace("c", 0.0)), prompt_id="p")
    (result,) = await svc.rank("r", [group])
    r = np.array([1.0, 0.0, 0.0])
    assert not result.routed and result.judge_calls == 0
    assert result.advantages == pytest.approx((r - r.mean()) / (r.std() + 1e-4))


async def test_rounds_of_groups_in_flight_are_batched_together():
    comparator = SimulatedComparator()
    svc = service(comparator)
    groups = [dead_group(f"g{k}", np.linspace(-1, 1, 8), prompt_id=f"p{k}") for k in range(10)]
    results = await svc.rank("r", groups)
    rounds = sum(r.rounds for r in results)
    assert all(r.routed and r.status == "ok" for r in results)
    assert svc.scheduler.batches < rounds / 5  # ten groups' rounds travel together
    assert comparator.calls == sum(r.judge_calls for r in results)


async def test_judge_failure_fails_only_the_routed_groups_and_the_service_goes_on():
    comparator = FailingComparator()
    svc = service(comparator)
    diverse = Group("d", (Trace("a", 1.0), Trace("b", 0.0)), prompt_id="q")
    dead, live = await svc.rank("r", [dead_group("g", [0, 1, 2]), diverse])
    assert dead.status == "judge_failed" and "model server down" in dead.error
    assert dead.advantages == (0.0, 0.0, 0.0)  # what the trainer would have had
    assert live.status == "ok" and not live.routed
    comparator.fail = False
    (again,) = await svc.rank("r", [dead_group("g2", [0, 1, 2])])
    assert again.status == "ok"


@pytest.mark.parametrize("bad", [[0.5], [0.5, float("nan")], [1.5, 0.2]])
async def test_malformed_verdicts_are_a_judge_failure(bad):
    class Malformed(Comparator):
        async def compare(self, comparisons):
            return (bad * len(comparisons))[: len(bad) if len(bad) == 1 else len(comparisons)]

    (result,) = await service(Malformed()).rank("r", [dead_group("g", [0, 1, 2])])
    assert result.status == "judge_failed"


async def test_unexpected_comparator_exception_becomes_a_judge_failure():
    svc = service(FailingComparator(error=ConnectionResetError("peer reset")))
    (result,) = await svc.rank("r", [dead_group("g", [0, 1])])
    assert result.status == "judge_failed" and "ConnectionResetError" in result.error


async def test_a_retried_request_id_is_judged_once():
    comparator = SimulatedComparator()
    svc = service(comparator, defaults=POOL)
    group = dead_group("g", [0, 1, 2, 3], request_id="req-1")
    first, second = await asyncio.gather(svc.rank_group("r", group), svc.rank_group("r", group))
    third = await svc.rank_group("r", group)
    assert first.advantages == second.advantages == third.advantages
    assert comparator.calls == first.judge_calls
    assert len((await svc.pool_snapshot("r"))["p"]) > 0


async def test_pool_fills_and_anchors_the_next_group_of_the_same_prompt_only():
    svc = service(defaults=POOL)
    await svc.rank("r", [dead_group("g1", [-1.0, 0.0, 1.0, 2.0], step=0)])
    pool = await svc.pool_snapshot("r")
    assert set(pool) == {"p"} and 0 < len(pool["p"]) <= 8
    (same,) = await svc.rank("r", [dead_group("g2", [0.5, 1.5], step=1)])
    (other,) = await svc.rank("r", [dead_group("g3", [0.5, 1.5], prompt_id="q", step=1)])
    assert same.anchors_used == 3 and other.anchors_used == 0
    assert set(await svc.pool_snapshot("r")) == {"p", "q"}
    (other_run,) = await svc.rank("r2", [dead_group("g4", [0.5, 1.5], step=1)])
    assert other_run.anchors_used == 0  # pools never cross runs


async def test_a_later_group_never_moves_the_anchors_it_drew():
    svc = service(defaults=POOL)
    await svc.rank("r", [dead_group("g1", [-1.0, 0.0, 1.0, 2.0], step=0)])
    before = {a.trace_id: a for a in (await svc.pool_snapshot("r"))["p"]}
    assert all(a.stderr is not None and a.stderr > 0 for a in before.values())
    (later,) = await svc.rank("r", [dead_group("g2", [3.0, 3.5, 4.0], step=1)])
    assert later.anchors_used == 3
    after = {a.trace_id: a for a in (await svc.pool_snapshot("r"))["p"]}
    kept = before.keys() & after.keys()  # the stronger group entered beside them
    assert len(kept) >= 2 and all(after[k] == before[k] for k in kept)  # as stored


async def test_anchors_put_groups_of_one_prompt_on_one_scale():
    svc = service()
    await svc.create_run(
        RunSettings(run_id="r", design="round_robin", order="both", anchors_per_group=3)
    )
    await svc.rank("r", [dead_group("g1", [-2.0, -1.0, 0.0, 1.0, 2.0], step=0)])
    (strong,) = await svc.rank("r", [dead_group("g2", [3.0, 3.5], step=1)])
    (weak,) = await svc.rank("r", [dead_group("g3", [-3.0, -3.5], step=2)])
    assert min(strong.strengths) > max(weak.strengths)


async def test_runs_must_exist_when_auto_creation_is_off():
    svc = service(auto_create_runs=False)
    with pytest.raises(RunNotFound):
        await svc.rank("nope", [dead_group("g", [0, 1])])
    await svc.create_run(RunSettings(run_id="yes"))
    with pytest.raises(RunExists):
        await svc.create_run(RunSettings(run_id="yes"))
    assert (await svc.get_run("yes")).design == "adaptive"
    assert await svc.delete_run("yes")
    with pytest.raises(RunNotFound):
        await svc.get_run("yes")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (RunSettings(run_id="r", design="knockout"), "settings.design"),
        (RunSettings(run_id="r", order="sideways"), "settings.order"),
        (RunSettings(run_id="r", lam=0.0), "settings.lam"),
        (RunSettings(run_id="r", scale=math.inf), "settings.scale"),
        (RunSettings(run_id="r", budget=-1), "settings.budget"),
        (RunSettings(run_id=""), "settings.run_id"),
        (RunSettings(run_id="r", min_tau_gain=-0.1), "settings.min_tau_gain"),
        (RunSettings(run_id="r", min_tau_gain=math.nan), "settings.min_tau_gain"),
        (RunSettings(run_id="r", design="live", min_tau_gain=0.01), "settings.min_tau_gain"),
    ],
)
async def test_bad_run_settings_name_the_field(settings, field):
    with pytest.raises(InvalidRequest) as info:
        await service().create_run(settings)
    assert info.value.field == field


async def test_a_run_may_end_settled_groups_early():
    # Far-apart strengths and soft verdicts: the order is clear long before the budget.
    group = dead_group("g", [6.0 * k for k in range(-5, 7)])
    svc = service()
    await svc.create_run(RunSettings(run_id="anytime", budget=120, min_tau_gain=0.002))
    await svc.create_run(RunSettings(run_id="whole", budget=120))
    (early,) = await svc.rank("anytime", [group])
    (whole,) = await svc.rank("whole", [group])
    assert whole.comparisons == 120
    assert 12 <= early.comparisons < 120
    assert kendalltau(early.strengths, range(12)).statistic > 0.9


async def test_a_failed_pool_write_is_an_error_not_a_silent_loss():
    svc = service(store=FailingStore(), defaults=POOL)
    with pytest.raises(StoreError):
        await svc.rank("r", [dead_group("g", [0, 1, 2])])


async def test_stream_yields_results_as_groups_finish_and_reports_bad_groups():
    svc = service()

    async def requests():
        yield "r", dead_group("a", [0, 1, 2, 3, 4, 5, 6, 7])
        yield "r", Group("bad", (Trace("only one", 1.0),))
        yield "r", Group("live", (Trace("x", 1.0), Trace("y", 0.0)))

    results = [r async for r in svc.rank_stream(requests())]
    by_id = {r.group_id: r for r in results}
    assert set(by_id) == {"a", "bad", "live"} and len(results) == 3
    assert by_id["bad"].status == "invalid" and "traces" in by_id["bad"].error
    assert [r.group_id for r in results][0] != "a"  # the 7-round tournament finishes last


class GatedComparator(SimulatedComparator):
    """Holds every batch until the test opens the gate; counts batches judged at once."""

    def __init__(self):
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0

    async def compare(self, comparisons):
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().compare(comparisons)


async def test_a_cancelled_try_does_not_cancel_its_retry():
    comparator = GatedComparator()
    svc = service(comparator)
    group = dead_group("g", [0, 1, 2], request_id="req-7")
    first = asyncio.create_task(svc.rank_group("r", group))
    await asyncio.sleep(0.01)
    retry = asyncio.create_task(svc.rank_group("r", group))
    await asyncio.sleep(0.01)
    first.cancel()  # the client gave up on its first try
    comparator.gate.set()
    result = await retry
    assert result.status == "ok" and result.routed
    assert comparator.calls == result.judge_calls  # judged once


async def test_a_run_deleted_while_judged_leaves_no_pool_behind():
    comparator = GatedComparator()
    store = MemoryStore()
    svc = service(comparator, store)
    ranking = asyncio.create_task(svc.rank("r", [dead_group("g", [0, 1, 2])]))
    await asyncio.sleep(0.01)
    assert await svc.delete_run("r")
    comparator.gate.set()
    (result,) = await ranking
    assert result.status == "ok"
    assert (await store.load_pool("r")).prompts == {}


async def test_a_stream_reads_no_further_than_its_in_flight_limit():
    comparator = GatedComparator()
    svc = service(comparator, max_stream_in_flight=2)
    sent = 0

    async def requests():
        nonlocal sent
        for k in range(6):
            sent += 1
            yield "r", dead_group(f"g{k}", [0, 1], prompt_id=f"p{k}")

    stream = svc.rank_stream(requests())
    first = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.05)
    assert sent == 3  # two groups in flight, the third read and waiting for room
    comparator.gate.set()
    results = [await first] + [r async for r in stream]
    assert sorted(r.group_id for r in results) == [f"g{k}" for k in range(6)]


class TemplatedComparator(SimulatedComparator):
    """Keeps the templates it is given, as an LLM judge does; refuses one without {first}."""

    def __init__(self):
        super().__init__()
        self.templates = {}

    def set_run_template(self, run_id, template):
        if template and "{first}" not in template:
            raise ValueError("missing slot {first}")
        if template:
            self.templates[run_id] = template
        else:
            self.templates.pop(run_id, None)

    def forget_run(self, run_id):
        self.templates.pop(run_id, None)


async def test_a_runs_judge_template_reaches_the_judge_and_survives_a_restart():
    store = MemoryStore()
    template = "{problem} {reference} {first} {second}"
    first = TemplatedComparator()
    await service(first, store).create_run(RunSettings(run_id="r", judge_template=template))
    assert first.templates == {"r": template}
    after_restart = TemplatedComparator()
    svc = service(after_restart, store)
    assert (await svc.get_run("r")).judge_template == template
    assert after_restart.templates == {"r": template}
    await svc.delete_run("r")
    assert after_restart.templates == {}


async def test_a_bad_template_is_refused_and_creates_no_run():
    store = MemoryStore()
    svc = service(TemplatedComparator(), store)
    with pytest.raises(InvalidRequest) as info:
        await svc.create_run(RunSettings(run_id="r", judge_template="{problem} only"))
    assert info.value.field == "settings.judge_template"
    assert await store.get_run("r") is None
    with pytest.raises(InvalidRequest, match="uses no prompt template"):
        await service().create_run(RunSettings(run_id="r", judge_template="{first} {second}"))


class RecordingComparator(SimulatedComparator):
    def __init__(self):
        super().__init__()
        self.asked = []

    async def compare(self, comparisons):
        self.asked.extend(comparisons)
        return await super().compare(comparisons)


async def test_isolated_runs_salt_the_prefix_cache_each_with_its_own_salt():
    comparator = RecordingComparator()
    svc = service(comparator)
    for run_id, isolate in (("a", True), ("b", True), ("open", False)):
        await svc.create_run(RunSettings(run_id=run_id, isolate_prefix_cache=isolate))
        await svc.rank(run_id, [dead_group("g", [0, 1, 2])])
    salts: dict[str, set[str | None]] = {}
    for c in comparator.asked:
        salts.setdefault(c.run_id, set()).add(c.cache_salt)
    assert salts["open"] == {None}
    assert len(salts["a"]) == len(salts["b"]) == 1 and salts["a"] != salts["b"]
    assert None not in salts["a"] | salts["b"]


async def test_a_run_weight_over_the_servers_maximum_is_refused_naming_the_field():
    with pytest.raises(InvalidRequest) as info:
        await service().create_run(RunSettings(run_id="r", weight=100.0))
    assert info.value.field == "settings.weight"


async def test_a_designs_default_budget_is_capped_by_the_servers_max_budget():
    """Round robin on G traces is G(G-1)/2 pairs (523,776 at G = 1,024, in both orders twice
    that): a run that sets no budget got it whatever the server's ``max_budget``."""
    round_robin = RunSettings(run_id="rr", design="round_robin", order="both")
    svc, default = service(limits=Limits(max_budget=100)), service()  # default: 16,384
    for each in (svc, default):
        await each.create_run(round_robin)
    await svc.create_run(RunSettings(run_id="own", design="round_robin", budget=30))
    group = dead_group("g", np.linspace(-2, 2, 16))  # 120 pairs, 240 calls in both orders
    (capped,) = await svc.rank("rr", [group])
    (own,) = await svc.rank("own", [group])
    (natural,) = await default.rank("rr", [group])
    assert (capped.status, capped.comparisons) == ("ok", 100)
    assert (own.comparisons, natural.comparisons) == (30, 240)


# -- what a group cost the judge: needed, cached, sent ----------------------------------------


def shared_group(group_id, texts, **kw):
    """A dead group of these exact texts (groups may share traces)."""
    return Group(group_id=group_id, prompt_id="p", prompt="2+2?",
                 traces=tuple(Trace(t, 1.0) for t in texts), **kw)


def cost(result):
    return result.comparisons, result.cached_comparisons, result.judge_requests


def metric(svc, name, run_id):
    for family in text_string_to_metric_families(svc.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("run") == run_id:
                return sample.value
    return 0.0


async def test_comparisons_a_verdict_cache_answered_do_not_count_as_judge_requests():
    judge = SimulatedComparator()
    svc = service(CachedComparator(judge))
    await svc.create_run(RunSettings(run_id="r", design="round_robin", order="both",
                                     anchors_per_group=0))
    a, b, c, d = (f"trace {k} strength={s}" for k, s in enumerate((0.5, -1.0, 2.0, 1.0)))
    (first,) = await svc.rank("r", [shared_group("g1", [a, b, c])])
    (shares,) = await svc.rank("r", [shared_group("g2", [a, b, d])])  # (a, b), (b, a) known
    (again,) = await svc.rank("r", [shared_group("g1", [a, b, c])])  # no request id: replayed
    assert cost(first) == (6, 0, 6) and cost(shares) == (6, 2, 4) and cost(again) == (6, 6, 0)
    assert again.advantages == first.advantages and again.judge_calls == 6  # the old name
    assert judge.calls == 10 == first.judge_requests + shares.judge_requests

    stats = await svc.run_stats("r")
    assert (stats["comparisons"], stats["cached_comparisons"], stats["judge_requests"]) == (
        18, 8, 10)
    assert stats["judge_calls"] == 18
    assert [metric(svc, f"arena_{name}_total", "r") for name in (
        "comparisons", "cached_comparisons", "judge_requests", "judge_calls")] == [18, 8, 10, 18]


async def test_a_repeat_in_one_batch_is_sent_once_and_counted_cached_once():
    judge = SimulatedComparator()
    svc = service(CachedComparator(judge))
    await svc.create_run(RunSettings(run_id="r", design="round_robin", order="both",
                                     anchors_per_group=0))
    texts = [f"trace {k} strength={s}" for k, s in enumerate((0.5, -1.0, 2.0))]
    results = await svc.rank("r", [shared_group("g1", texts), shared_group("g2", texts)])
    assert svc.scheduler.batches == 1 and judge.calls == 6
    assert sorted(cost(r) for r in results) == [(6, 0, 6), (6, 6, 0)]


async def test_a_judge_failure_reports_the_cost_of_the_rounds_asked_before_and_at_it():
    class FailsAfterOneBatch(SimulatedComparator):
        async def compare(self, comparisons):
            if self.calls:
                raise JudgeError("judge gone")
            return await super().compare(comparisons)

    judge = FailsAfterOneBatch()
    svc = service(CachedComparator(judge))
    await svc.create_run(RunSettings(run_id="r", design="swiss", anchors_per_group=0))
    group = dead_group("g", [0.5, -1.0, 2.0, 0.0, 1.2, -0.4])
    # the same group twice at once (no request id): the same tournament, whose first round
    # is judged once; the second round fails for both
    one, two = await asyncio.gather(svc.rank("r", [group]), svc.rank("r", [group]))
    results = one + two
    assert all(r.status == "judge_failed" and r.rounds == 2 for r in results)
    first_round = judge.calls
    failed_round = results[0].comparisons - first_round  # needed too; no request counted
    assert first_round > 0 and failed_round > 0
    needed = first_round + failed_round
    assert sorted(cost(r) for r in results) == [
        (needed, 0, first_round), (needed, first_round, 0)]
    stats = await svc.run_stats("r")
    assert (stats["judge_failed"], stats["comparisons"], stats["cached_comparisons"],
            stats["judge_requests"]) == (2, 2 * needed, first_round, first_round)
