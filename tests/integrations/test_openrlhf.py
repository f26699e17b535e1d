"""OpenRLHF: its flags, and the ``.py`` route's reward_func against a real server (and none)."""

from __future__ import annotations

import concurrent.futures
import pickle

import pytest

from trainer_client.integrations.openrlhf import (
    answer_verifier,
    endpoint,
    flags,
    main,
    make_reward_func,
    response_of,
)

TEMPLATE = "<|user|>\n{}\n<|assistant|>\n"
EGGS = "Janet has 16 eggs, eats 3 and bakes with 4. She sells the rest at $2 each. How much?"
RESPONSES = [
    "16 - 3 - 4 = 9 eggs\n9 * 2 = 18 dollars\nThe answer is 18.",
    "16 - 3 - 4 = 9 eggs\n9 * 2 = 20 dollars\nThe answer is 18.",
    "She has 16 - 7 = 9 eggs\n9 * 2 = 18 dollars\nThe answer is 18.",
    "16 - 3 = 12 eggs\n12 - 4 = 8 eggs\n8 * 2 = 18 dollars\nThe answer is 18.",
]


def test_flags():
    assert flags("http://judge:8000/", run_id="exp", group_size=8) == [
        "--reward.remote_url", "http://judge:8000/v1/openrlhf/exp?group_size=8",
        "--rollout.n_samples_per_prompt", "8",
        "--algo.advantage.estimator", "dr_grpo",
        "--data.label_key", "answer",
    ]
    assert flags("http://j:1", legacy=True, label_key=None) == [
        "--remote_rm_url", "http://j:1/v1/openrlhf/default?group_size=8",
        "--n_samples_per_prompt", "8", "--advantage_estimator", "dr_grpo",
    ]
    assert endpoint("http://j:1", run_id="r") == "http://j:1/v1/openrlhf/r"


def test_main_prints_the_flags(capsys):
    assert main(["--url", "http://judge:8000", "--run-id", "exp", "--group-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "--reward.remote_url 'http://judge:8000/v1/openrlhf/exp?group_size=4'" in out
    assert "--algo.advantage.estimator dr_grpo" in out


@pytest.mark.parametrize(
    ("response", "label", "reward"),
    [
        ("9 * 2 = 18. The answer is 18.", "18", 1.0),
        ("\\boxed{1,200}", 1200, 1.0),
        ("#### 0.5", "1/2", 1.0),
        ("The answer is 17.", "18", 0.0),
        ("Answer: Paris", "paris", 1.0),
        ("nothing", "18", 0.0),
        ("18", None, 0.0),
    ],
)
def test_answer_verifier(response, label, reward):
    assert answer_verifier(response, label) == reward


SAMPLES = [  # (response, label): the two, and one of each kind the verifier reads
    ("It's 2/4", "0.5"),
    ("50%", "0.5"),
    ("9 * 2 = 18. The answer is 18.", "18"),
    ("So \\boxed{\\frac{3}{4}}.", "0.75"),
    ("It costs $1,200 in all.", "1200"),
    ("#### -7", "-7"),
    ("The answer is 17.", "18"),
    ("Answer: Paris", "paris"),
    ("no number here", "18"),
    ("18", None),
]


@pytest.mark.parametrize(("response", "label"), SAMPLES)
def test_both_routes_give_a_sample_the_same_reward(response, label):
    """The ``.py`` route's verifier and the URL route's (the server's), on the sample as each
    route cuts it out of OpenRLHF's query."""
    from judge_server.transports.assembly import math_verifier
    from judge_server.transports.assembly import response_of as server_response_of

    query = TEMPLATE.format("?") + response + "</s>"
    prompt = TEMPLATE.format("?")
    client = answer_verifier(response_of(query, prompt), label)
    server = math_verifier(server_response_of(query, prompt), label)
    assert client == server == answer_verifier(response, label)


def call_concurrently(reward_func, problem, responses, label):
    """As OpenRLHF does: one call per sample, each in a worker thread, all at once."""
    prompt = TEMPLATE.format(problem)
    with concurrent.futures.ThreadPoolExecutor(len(responses)) as pool:
        futures = [pool.submit(reward_func, [prompt + r + "</s>"], [prompt], [label])
                   for r in responses]
        return [f.result() for f in futures]


def test_reward_func_gets_each_sample_its_value(threaded_judge):
    judge = threaded_judge()
    reward_func = make_reward_func(url=judge.http_url, run_id="orlhf", group_size=4)
    answers = call_concurrently(reward_func, EGGS, RESPONSES, "18")
    reward_func.scorer.close()

    for answer in answers:
        assert set(answer) == {"rewards", "scores", "extra_logs"}
        assert answer["scores"] == [1.0] and answer["extra_logs"]["arena_judged"] == [1.0]
    values = [a["rewards"][0] for a in answers]
    assert sum(values) == pytest.approx(4.0) and len(set(values)) > 1
    assert max(values[1], values[3]) < min(values[0], values[2])  # wrong arithmetic lower


def test_reward_func_keeps_the_verifiable_reward_when_the_judge_is_down():
    reward_func = make_reward_func(url="http://127.0.0.1:9", group_size=4, timeout_s=2)
    answers = call_concurrently(reward_func, EGGS, RESPONSES[:2] + ["The answer is 7."], "18")
    assert [a["rewards"] for a in answers] == [[1.0], [1.0], [0.0]]
    assert all(a["extra_logs"]["arena_fell_back"] == [1.0] for a in answers)


def test_reward_func_scorer_pickles():
    scorer = make_reward_func(url="http://judge:8000", group_size=4).scorer
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy.endpoint == "http://judge:8000/v1/openrlhf/default?group_size=4"
