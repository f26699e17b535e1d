"""Group assembly behind OpenRLHF's remote reward protocol, on a real server over HTTP.

Every request is what OpenRLHF sends: one sample, ``{"query": [prompt + response + eos],
"prompts": [prompt], "labels": [label]}``, the samples of a group arriving concurrently.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from judge_server.comparators.simulated import SimulatedComparator
from judge_server.errors import JudgeError
from judge_server.server import JudgeServer
from judge_server.settings import ServerSettings
from judge_server.transports.assembly import (
    AssemblyOptions,
    GroupAssembler,
    Places,
    Sample,
    math_verifier,
    response_of,
)

TEMPLATE = "<|user|>\n{}\n<|assistant|>\n"
EOS = "</s>"

# A dead group (every final answer right), a live one, a dead one (every final answer wrong).
EGGS = "Janet has 16 eggs, eats 3 and bakes with 4. She sells the rest at $2 each. How much?"
GROUPS = {
    EGGS: ("18", [
        "16 - 3 - 4 = 9 eggs\n9 * 2 = 18 dollars\nThe answer is 18.",
        "16 - 3 - 4 = 9 eggs\n9 * 2 = 20 dollars\nThe answer is 18.",
        "She has 16 - 7 = 9 eggs\n9 * 2 = 18 dollars\nThe answer is 18.",
        "16 - 3 = 12 eggs\n12 - 4 = 8 eggs\n8 * 2 = 18 dollars\nThe answer is 18.",
    ]),
    "What is 2 + 2?": ("4", [
        "2 + 2 = 4. The answer is 4.",
        "2 + 2 = 5. The answer is 5.",
        "2 + 2 = 4, so the answer is 4.",
        "The answer is 3.",
    ]),
    "What is 7 * 6?": ("42", [
        "7 * 6 = 48. The answer is 48.",
        "7 * 6 = 36. The answer is 36.",
        "The answer is 41.",
        "7 * 6 = 42, so the answer is 24.",
    ]),
}
WRONG_ARITHMETIC = {1, 3}  # in the EGGS group


def body(problem: str, response: str, label: str | None) -> dict:
    prompt = TEMPLATE.format(problem)
    return {"query": [prompt + response + EOS], "prompts": [prompt], "labels": [label]}


async def post(http, run_id, payload, **params):
    return await http.post(f"/v1/openrlhf/{run_id}", json=payload, params=params)


class ServerClient(httpx.AsyncClient):
    """An HTTP client of ``server``."""

    server: JudgeServer


@pytest.fixture
async def http(start_server):
    server = await start_server()
    async with ServerClient(base_url=server.http_url, trust_env=False, timeout=30) as c:
        c.server = server
        yield c


async def test_concurrent_samples_of_three_groups_each_get_their_own_value(http):
    requests = [(p, k, r, label) for p, (label, rs) in GROUPS.items() for k, r in enumerate(rs)]
    random.Random(0).shuffle(requests)

    responses = await asyncio.gather(
        *(post(http, "r1", body(p, r, label), group_size=4) for p, _, r, label in requests)
    )

    got: dict[str, dict[int, dict]] = {p: {} for p in GROUPS}
    for (p, k, _, _), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) == {"rewards", "scores", "extra_logs"}
        assert all(len(v) == 1 for v in [answer["rewards"], answer["scores"]])
        got[p][k] = {"value": answer["rewards"][0], "verifiable": answer["scores"][0],
                     **{key: v[0] for key, v in answer["extra_logs"].items()}}

    eggs = [got[EGGS][k] for k in range(4)]
    assert [s["verifiable"] for s in eggs] == [1.0] * 4  # dead: every final answer is 18
    assert all(s["arena_judged"] == 1.0 and s["arena_group_size"] == 4 for s in eggs)
    values = [s["value"] for s in eggs]
    assert len(set(values)) > 1  # the judge told them apart
    assert sum(v - 1.0 for v in values) == pytest.approx(0.0, abs=1e-9)  # zero-mean judge part
    worst_right = min(values[k] for k in range(4) if k not in WRONG_ARITHMETIC)
    assert max(values[k] for k in WRONG_ARITHMETIC) < worst_right  # its own value, not another's

    live = [got["What is 2 + 2?"][k] for k in range(4)]
    assert [s["verifiable"] for s in live] == [1.0, 0.0, 1.0, 0.0]
    assert [s["value"] for s in live] == [1.0, 0.0, 1.0, 0.0]  # untouched: not dead
    assert all(s["arena_judged"] == 0.0 and s["arena_judge"] == 0.0 for s in live)

    wrong = [got["What is 7 * 6?"][k] for k in range(4)]
    assert [s["verifiable"] for s in wrong] == [0.0] * 4
    assert all(s["arena_judged"] == 1.0 for s in wrong)
    assert len({s["value"] for s in wrong}) > 1
    assert sum(s["value"] for s in wrong) == pytest.approx(0.0, abs=1e-9)

    groups = http.server.service.metrics.groups  # each group ranked once
    assert groups.labels("r1", "judged")._value.get() == 2
    assert groups.labels("r1", "live")._value.get() == 1


async def test_one_request_may_carry_several_samples_and_the_extensions(http):
    # verl's reward manager: its own group ids (uids) and verifiable rewards.
    payload = {
        "query": [f"Q: 1 + 1?\nA: {t}" for t in ("2", "1 + 1 = 2", "two", "it is 2")],
        "prompts": ["Q: 1 + 1?\nA: "] * 4,
        "labels": [2, 2, 2, 2],
        "group_ids": ["uid-1"] * 4,
        "verifiable_rewards": [0.5] * 4,
    }
    response = await post(http, "r2", payload, group_size=4)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["scores"] == [0.5] * 4  # the caller's rewards, not the server's check
    assert answer["extra_logs"]["arena_judged"] == [1.0] * 4
    assert sum(answer["rewards"]) == pytest.approx(2.0)


async def test_a_prompt_twice_in_one_batch_makes_two_groups(http):
    texts = [f"2 + 2 = 4. The answer is 4. (take {k})" for k in range(4)]
    responses = await asyncio.gather(
        *(post(http, "r3", body("What is 2 + 2?", t, "4"), group_size=2) for t in texts)
    )
    sizes = [r.json()["extra_logs"]["arena_group_size"][0] for r in responses]
    assert sizes == [2.0] * 4
    assert http.server.service.metrics.groups.labels("r3", "judged")._value.get() == 2


async def test_partial_groups_close_on_the_timeout(http):
    # Two of four samples: judged as a group of two when the group times out (not before;
    # the upper bound only says that it does close, with a wide margin for a loaded machine).
    started = time.perf_counter()
    pair = await asyncio.gather(*(
        post(http, "r4", body(EGGS, GROUPS[EGGS][1][k], "18"), group_size=4, timeout_s=1.0)
        for k in (0, 1)
    ))
    assert 1.0 <= time.perf_counter() - started < 10
    logs = [r.json()["extra_logs"] for r in pair]
    assert [x["arena_group_size"][0] for x in logs] == [2.0, 2.0]
    assert [x["arena_judged"][0] for x in logs] == [1.0, 1.0]
    rewards = [r.json()["rewards"][0] for r in pair]
    assert rewards[0] > rewards[1] and sum(rewards) == pytest.approx(2.0)

    # Samples of the closed group that come late (within its timeout of the close) get their
    # verifiable reward at once: one that opened a new group would wait its 30 s.
    started = time.perf_counter()
    late = await post(http, "r4", body(EGGS, GROUPS[EGGS][1][2], "18"), group_size=4,
                      timeout_s=30)
    assert time.perf_counter() - started < 10
    assert late.json()["rewards"] == [1.0] and late.json()["extra_logs"]["arena_judged"] == [0.0]

    # ... and a sample alone at the timeout keeps its verifiable reward.
    alone = await post(http, "r4", body("What is 9 - 4?", "9 - 4 = 5. The answer is 5.", "5"),
                       group_size=4, timeout_s=0.2)
    assert alone.json()["rewards"] == [1.0]
    assert alone.json()["extra_logs"] == {
        "arena_verifiable": [1.0], "arena_judge": [0.0], "arena_judged": [0.0],
        "arena_group_size": [1.0],
    }


async def test_a_judge_failure_gives_the_verifiable_rewards(start_server):
    class Down(SimulatedComparator):
        async def compare(self, comparisons):
            raise JudgeError("model server down")

    server = await start_server(comparator=Down())
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as c:
        responses = await asyncio.gather(*(
            post(c, "r5", body(EGGS, t, "18"), group_size=4) for t in GROUPS[EGGS][1]
        ))
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["rewards"] == [1.0]
        assert response.json()["extra_logs"]["arena_judged"] == [0.0]


def assert_error(response: httpx.Response, status: int, field: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "field", "message"}
    assert error["code"] == "invalid_argument" and error["field"] == field
    assert error["message"].startswith(f"{field}:")
    return error


@pytest.mark.parametrize(
    ("payload", "params", "status", "field"),
    [
        ({"prompts": ["p"]}, {}, 422, "query"),
        ({"query": "not a list"}, {}, 422, "query"),
        ({"query": ["a", "b"], "prompts": ["p"]}, {}, 400, "prompts"),
        ({"query": ["a"], "labels": ["1", "2"]}, {}, 400, "labels"),
        ({"query": ["a"], "verifiable_rewards": [float("nan")]}, {}, 400,
         "verifiable_rewards[0]"),
        ({"query": []}, {}, 400, "query"),
        ({"query": ["a"]}, {"group_size": 1}, 400, "group_size"),
        ({"query": ["a"]}, {"group_size": "eight"}, 422, "group_size"),
        ({"query": ["a"]}, {"timeout_s": 0}, 400, "timeout_s"),
        ({"query": ["x" * 300_000]}, {}, 400, "query[0]"),
    ],
)
async def test_a_bad_request_gets_the_one_error_shape(http, payload, params, status, field):
    if "verifiable_rewards" in payload:  # NaN is not JSON: send Python's literal as OpenRLHF can
        response = await http.post(
            "/v1/openrlhf/r6", content='{"query": ["a"], "verifiable_rewards": [NaN]}',
            headers={"content-type": "application/json"},
        )
    else:
        response = await post(http, "r6", payload, **params)
    assert_error(response, status, field)
    assert http.server.app.state.assembler.pending == 0  # nothing was buffered


async def test_a_bad_run_id_is_refused(http):
    response = await post(http, "r" * 300, body(EGGS, "18", "18"))
    assert_error(response, 400, "run_id")


async def test_the_server_options_set_the_defaults(start_server):
    settings = ServerSettings(assembly_group_size=2, assembly_timeout_s=5)
    assert settings.assembly_options() == AssemblyOptions(group_size=2, timeout_s=5.0)
    server = await start_server(assembly_group_size=2)
    assert server.app.state.assembler.options.group_size == 2
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as c:
        pair = await asyncio.gather(*(
            post(c, "r7", body(EGGS, t, "18")) for t in GROUPS[EGGS][1][:2]
        ))
    assert [r.json()["extra_logs"]["arena_group_size"] for r in pair] == [[2.0], [2.0]]


async def test_closing_answers_every_waiting_sample(start_server):
    server = await start_server()
    assembler: GroupAssembler = server.app.state.assembler
    waiting = asyncio.ensure_future(
        assembler.score("r8", Sample(response="The answer is 5.", prompt="9 - 4?", label="5"),
                        group_size=4, timeout_s=60)
    )
    while assembler.pending == 0:
        await asyncio.sleep(0.01)
    await assembler.aclose()
    score = await asyncio.wait_for(waiting, 5)
    assert (score.value, score.status) == (1.0, "alone")
    after = await assembler.score("r8", Sample(response="4", prompt="2 + 2?", label="4"))
    assert (after.value, after.status) == (1.0, "alone")  # no new groups once closing


def test_the_response_is_the_query_less_its_prompt():
    prompt = TEMPLATE.format("What is 2 + 2?")
    assert response_of(prompt + "The answer is 4.<|im_end|>", prompt) == "The answer is 4."
    assert response_of(prompt + "4</s>", prompt) == "4"
    assert response_of("<s>" + prompt + "4", prompt) == "4"  # a BOS the prompt lacks
    assert response_of("something else", prompt) == "something else"
    assert response_of("just text", None) == "just text"


@pytest.mark.parametrize(
    ("response", "label", "reward"),
    [
        ("16 - 7 = 9, 9 * 2 = 18. The answer is 18.", "18", 1.0),
        ("So she makes \\boxed{18} dollars.", "18", 1.0),
        ("It costs $1,200 in all.", "1200", 1.0),
        ("The answer is 0.5.", "1/2", 1.0),
        ("The answer is 17.", "18", 0.0),
        ("#### 72", "Natalia sold 48/2 = 24 clips.\n#### 72", 1.0),
        ("no number here", "18", 0.0),
        ("The answer is 18.", None, 0.0),
        ("The answer is 18.", "", 0.0),
    ],
)
def test_the_default_verifier_compares_final_answers(response, label, reward):
    assert math_verifier(response, label) == reward


async def test_two_tenants_samples_for_one_run_id_never_form_one_group(start_server):
    """Each tenant's ``default`` is its own run: samples of one prompt sent by two tenants to
    ``default`` are two groups (here each alone at its timeout), never one, and each is
    judged in its own tenant's run."""
    server = await start_server()
    assembler: GroupAssembler = server.app.state.assembler
    scores = await asyncio.gather(*(
        assembler.score("default", Sample(response=f"The answer is {k}.", prompt="2 + 2?",
                                          label="4"), group_size=2, timeout_s=0.3, tenant=t)
        for k, t in ((4, "team-a"), (5, "team-b"))
    ))
    assert [(s.status, s.group_size) for s in scores] == [("alone", 1), ("alone", 1)]
    for tenant in ("team-a", "team-b"):
        assert [r.run_id for r in await server.service.list_runs(tenant=tenant)] == ["default"]
    assert assembler.pending == 0 and assembler._held_all == (0, 0)


async def test_a_request_cancelled_as_its_samples_start_gives_their_places_back(start_server):
    """A caller gone (cancelled) after its samples took their places and before they started
    gives every place back, and its bytes: none is left counting against the run's caps."""
    server = await start_server()
    assembler: GroupAssembler = server.app.state.assembler
    samples = [Sample(response=f"The answer is {k}.", prompt="2 + 2?", label="4")
               for k in range(3)]
    each = len("The answer is 0.") + len("2 + 2?") + len("4")
    for _ in range(20):  # cancelled at each step of the loop until the places are taken
        task = asyncio.ensure_future(
            assembler.score_many("r9", samples, group_size=8, timeout_s=60))
        while assembler._held_all.samples == 0 and not task.done():
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert assembler._held_all == (assembler.pending, assembler.pending * each)
    await assembler.aclose()
    assert assembler._held_all == (0, 0)


async def test_buffered_samples_are_capped_in_bytes_too_and_their_bytes_come_back(start_server):
    """Samples at the size limits passed the count caps by far (48 GiB by default): now their
    bytes are capped too, per run and on the server, and a request past either is refused
    whole (429) while the count caps would admit it; the bytes come back once the samples are
    answered, and a small sample still fits where a big one did not."""
    server = await start_server(assembly_max_run_bytes=2500, assembly_max_bytes=3500)
    assembler: GroupAssembler = server.app.state.assembler

    def big(k: int, group: str) -> dict:  # 1,000 bytes: response, prompt, label, group key
        return {"query": [f"{k:03d}" + "x" * 990], "prompts": ["big?"], "labels": ["7"],
                "group_ids": [group]}

    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=60) as c:

        def send(run_id: str, payload: dict, size: int, timeout_s: float = 60):
            return asyncio.ensure_future(post(c, run_id, payload, group_size=size,
                                              timeout_s=timeout_s))

        async def buffered(n: int) -> None:
            while assembler.pending < n:
                await asyncio.sleep(0.01)

        a = [send("a", big(k, "ga"), 3) for k in range(2)]
        await buffered(2)
        assert assembler._held_all == Places(2, 2000)
        refused = await post(c, "a", big(2, "g2"), group_size=8, timeout_s=1)  # 3,000 > 2,500
        assert refused.status_code == 429 and "retry-after" in refused.headers, refused.text
        assert "2000 bytes of this run waiting, limit 2500" in refused.text
        assert "samples of this run" not in refused.text  # 3 samples: far below the count
        b = [send("b", big(3, "gb"), 2)]
        await buffered(3)
        refused = await post(c, "b", big(4, "g4"), group_size=8, timeout_s=1)  # 4,000 > 3,500
        assert refused.status_code == 429, refused.text
        assert "3000 bytes waiting in all, limit 3500" in refused.text
        small = {"query": ["7"], "prompts": ["small?"], "labels": ["7"], "group_ids": ["ga"]}
        a.append(send("a", small, 3))  # 8 bytes fit: the group of a closes
        assert [r.status_code for r in await asyncio.gather(*a)] == [200] * 3
        b.append(send("b", big(5, "gb"), 2))  # 2,000 in all again
        assert [r.status_code for r in await asyncio.gather(*b)] == [200] * 2
        assert assembler.pending == 0 and assembler._held_all == (0, 0)

        waiting = [send("a", big(6, "gc"), 2)]  # 1,000 waiting
        await buffered(1)
        waiting.append(send("a", big(7, "gc"), 2))  # the bytes came back
        assert [r.status_code for r in await asyncio.gather(*waiting)] == [200] * 2
