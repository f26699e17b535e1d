"""The fair and FIFO round queues: properties under random pushes, batches, answers and
withdrawals (hypothesis), and the shares and waits that fairness promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge_server.core.scheduling import FairQueue, FifoQueue, Round, make_queue

RUNS = ("a", "b", "c")

push = st.tuples(
    st.just("push"),
    st.sampled_from(RUNS),
    st.integers(1, 24),  # size
    st.sampled_from([0.5, 1.0, 2.0, 8.0]),  # weight
    st.one_of(st.none(), st.integers(1, 40)),  # cap
)
pop = st.tuples(st.just("pop"), st.integers(1, 64))
settle = st.tuples(st.just("settle"), st.integers(0, 10**6))
remove = st.tuples(st.just("remove"), st.integers(0, 10**6))
operations = st.lists(st.one_of(push, push, pop, pop, settle, remove), max_size=120)


def check_batch(queue, batch, max_items, caps, in_flight_before):
    sizes = [r.size for r in batch]
    assert sum(sizes) <= max_items or len(batch) == 1, "batch over max_items"
    if queue.policy == "fair":
        for run_id in {r.run_id for r in batch}:
            cap = caps[run_id]
            mine = [r for r in batch if r.run_id == run_id]
            if cap is not None and queue.in_flight_of(run_id) > cap:
                # only a round larger than the cap, sent with nothing else of its run in flight
                assert in_flight_before.get(run_id, 0) == 0 and len(mine) == 1, "cap passed"


@pytest.mark.parametrize("policy", ["fair", "fifo"])
@settings(max_examples=300, deadline=None)
@given(ops=operations)
def test_no_round_is_lost_or_duplicated_and_batches_respect_sizes_and_caps(policy, ops):
    queue = make_queue(policy)
    pushed: list[Round[int]] = []
    waiting, in_flight, removed = [], [], set()
    sent_order: dict[str, list[int]] = {r: [] for r in RUNS}
    caps = {}
    for op in ops:
        if op[0] == "push":
            _, run_id, size, weight, cap = op
            handle = queue.push(run_id, len(pushed), size, weight=weight, cap=cap)
            caps[run_id] = cap
            pushed.append(handle)
            waiting.append(handle)
        elif op[0] == "pop":
            before = {r: queue.in_flight_of(r) for r in RUNS}
            batch = queue.pop_batch(op[1])
            check_batch(queue, batch, op[1], caps, before)
            for r in batch:
                assert r in waiting, "a round went twice, or one that was withdrawn"
                waiting.remove(r)
                in_flight.append(r)
                sent_order[r.run_id].append(r.item)
            if not batch and waiting and policy == "fifo":
                pytest.fail("FIFO held back a round")
            if not batch and waiting and policy == "fair":
                # only caps hold rounds back, and only of runs with something in flight
                assert all(queue.in_flight_of(r.run_id) > 0 for r in waiting)
        elif op[0] == "settle" and in_flight:
            queue.settle(in_flight.pop(op[1] % len(in_flight)))
        elif op[0] == "remove" and pushed:
            handle = pushed[op[1] % len(pushed)]
            assert queue.remove(handle) == (handle in waiting)
            if handle in waiting:
                waiting.remove(handle)
                removed.add(handle.item)
        assert queue.queued == sum(r.size for r in waiting)
        assert len(queue) == len(waiting)
        assert queue.in_flight == sum(r.size for r in in_flight)
        for run_id in RUNS:
            assert queue.queued_of(run_id) == sum(r.size for r in waiting if r.run_id == run_id)
            assert queue.in_flight_of(run_id) == sum(
                r.size for r in in_flight if r.run_id == run_id
            )
    # drain: answer everything, then every waiting round goes, each exactly once
    while in_flight:
        queue.settle(in_flight.pop())
    while waiting:
        batch = queue.pop_batch(64)
        assert batch, "rounds stuck with nothing in flight"
        for r in batch:
            waiting.remove(r)
            sent_order[r.run_id].append(r.item)
            queue.settle(r)
    assert queue.queued == queue.in_flight == len(queue) == 0
    for run_id in RUNS:  # every run's rounds in arrival order, none lost, none twice
        expected = [r.item for r in pushed if r.run_id == run_id and r.item not in removed]
        assert sent_order[run_id] == expected


@settings(max_examples=100, deadline=None)
@given(
    w1=st.integers(1, 8),
    w2=st.integers(1, 8),
    max_items=st.integers(16, 256),
    sizes=st.lists(st.integers(1, 16), min_size=50, max_size=50),
)
def test_two_busy_runs_are_served_in_the_ratio_of_their_weights(w1, w2, max_items, sizes):
    queue: FairQueue[object] = FairQueue()
    served = {"a": 0, "b": 0}
    k = 0
    for _ in range(400):
        for run_id, weight in (("a", w1), ("b", w2)):  # always backlogged
            while queue.queued_of(run_id) < 2 * max_items:
                queue.push(run_id, None, sizes[k % len(sizes)], weight=weight)
                k += 1
        for r in queue.pop_batch(max_items):
            served[r.run_id] += r.size
            queue.settle(r)
    # start-time fair queuing: normalised service differs by at most a round of each
    assert abs(served["a"] / w1 - served["b"] / w2) <= 16 / w1 + 16 / w2
    assert served["a"] / served["b"] == pytest.approx(w1 / w2, rel=0.02)


@settings(max_examples=150, deadline=None)
@given(
    weights=st.lists(st.sampled_from([1.0, 2.0, 10.0]), min_size=1, max_size=3),
    sizes=st.lists(st.integers(1, 16), min_size=20, max_size=20),
    batches_before=st.integers(0, 30),
    new_size=st.integers(1, 16),
    new_weight=st.sampled_from([0.5, 1.0]),
)
def test_a_newly_active_run_is_served_in_the_next_batch(
    weights, sizes, batches_before, new_size, new_weight
):
    """However deep the busy runs' queues, a new run waits behind one round of each."""
    queue: FairQueue[object] = FairQueue()
    max_items = 16 * (len(weights) + 1)
    k = 0
    for _ in range(batches_before + 1):
        for n, weight in enumerate(weights):
            while queue.queued_of(f"busy{n}") < 10 * max_items:
                queue.push(f"busy{n}", None, sizes[k % len(sizes)], weight=weight)
                k += 1
        for r in queue.pop_batch(max_items):
            queue.settle(r)
    queue.push("new", "hello", new_size, weight=new_weight)
    assert "hello" in [r.item for r in queue.pop_batch(max_items)]


def test_fifo_serves_in_arrival_order_whatever_the_run():
    queue: FifoQueue[int] = FifoQueue()
    for k in range(6):
        queue.push("flood" if k < 5 else "quiet", k, 4)
    assert [r.item for r in queue.pop_batch(8)] == [0, 1]
    assert [r.item for r in queue.pop_batch(8)] == [2, 3]
    assert [r.item for r in queue.pop_batch(100)] == [4, 5]


def test_fair_queue_puts_a_quiet_run_ahead_of_a_flood():
    queue: FairQueue[object] = FairQueue()
    for k in range(50):
        queue.push("flood", k, 4)
    assert len(queue.pop_batch(8)) == 2
    queue.push("quiet", "q", 4)
    assert [r.item for r in queue.pop_batch(8)] == ["q", 2]  # ahead of the flood's backlog


def test_a_round_larger_than_the_batch_goes_alone_and_a_batch_stops_at_one_that_does_not_fit():
    queue: FairQueue[object] = FairQueue()
    queue.push("a", "big", 100)
    queue.push("b", "small", 3)
    assert [r.item for r in queue.pop_batch(10)] == ["big"]
    assert [r.item for r in queue.pop_batch(10)] == ["small"]
    fifo: FifoQueue[str] = FifoQueue()
    for item, size in (("x", 6), ("y", 6), ("z", 1)):
        fifo.push("a", item, size)
    assert [r.item for r in fifo.pop_batch(10)] == ["x"]  # z would fit but waits its turn


def test_a_run_at_its_cap_waits_and_others_take_the_room():
    queue: FairQueue[object] = FairQueue()
    for k in range(4):
        queue.push("capped", f"c{k}", 4, cap=8)
        queue.push("free", f"f{k}", 4)
    first = queue.pop_batch(100)
    assert sum(r.size for r in first if r.run_id == "capped") == 8
    assert queue.in_flight_of("capped") == 8
    assert all(r.run_id == "free" for r in queue.pop_batch(100))
    assert queue.pop_batch(100) == []  # only the capped run waits, and it is at its cap
    queue.settle(next(r for r in first if r.run_id == "capped"))
    assert [r.item for r in queue.pop_batch(100)] == ["c2"]


def test_a_round_larger_than_the_cap_goes_when_its_run_has_nothing_in_flight():
    queue: FairQueue[object] = FairQueue()
    queue.push("a", "big", 20, cap=8)
    queue.push("a", "next", 2, cap=8)
    (big,) = queue.pop_batch(100)
    assert big.item == "big" and queue.pop_batch(100) == []
    queue.settle(big)
    assert [r.item for r in queue.pop_batch(100)] == ["next"]


def test_a_withdrawn_round_never_goes_and_its_run_keeps_its_place():
    queue: FairQueue[object] = FairQueue()
    head = queue.push("a", "a0", 4)
    queue.push("a", "a1", 4)
    queue.push("b", "b0", 4)
    assert queue.remove(head) and not queue.remove(head)
    assert queue.queued == 8 and queue.queued_of("a") == 4
    assert [r.item for r in queue.pop_batch(100)] == ["a1", "b0"]


def test_idle_runs_are_forgotten():
    queue: FairQueue[object] = FairQueue()
    for run_id in ("a", "b"):
        queue.push(run_id, None, 4)
    for r in queue.pop_batch(100):
        queue.settle(r)
    for _ in range(3):
        queue.push("c", None, 4)
        for r in queue.pop_batch(100):
            queue.settle(r)
    assert set(queue._runs) <= {"c"}


@pytest.mark.parametrize(
    "bad", [dict(size=0), dict(weight=0.0), dict(weight=float("nan")), dict(cap=0),
            dict(weight=1e-320), dict(weight=float("inf"))]  # 1e-320: an infinite finish tag
)
def test_push_refuses_bad_sizes_weights_and_caps(bad):
    args = {"size": 1, "weight": 1.0, "cap": None, **bad}
    size = args.pop("size")
    with pytest.raises(ValueError):
        FairQueue[None]().push("a", None, size, **args)


def test_make_queue():
    assert make_queue("fair").policy == "fair" and make_queue("fifo").policy == "fifo"
    with pytest.raises(ValueError, match="policy"):
        make_queue("lottery")  # type: ignore[arg-type]
