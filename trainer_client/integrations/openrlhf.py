"""OpenRLHF: its remote reward URL pointed at the judge server, and the flags that go with it.

OpenRLHF asks a remote reward service for each sample right after generating it: it POSTs
``{"query": [prompt + response], "prompts": [prompt], "labels": [label]}`` to
``--reward.remote_url`` (180 s timeout, 5 tries) and reads ``{"rewards", "scores",
"extra_logs"}``. The judge server answers that protocol at ``POST /v1/openrlhf/{run_id}``: it
checks the response's final answer against the label (the verifiable reward: 1.0 or 0.0),
buffers the sample until its group (``?group_size=``, the server's ``assembly_group_size`` by
default) is complete, judges the group once, and gives each sample its verifiable reward plus,
when the group was dead, the judge's zero-mean advantage. A group not complete after the
server's ``assembly_timeout_s`` (120 s) is judged as it stands (one sample alone keeps its
verifiable reward). The samples of a prompt are generated concurrently, so a group completes
as soon as its slowest sample is generated.

Flags (OpenRLHF 0.10.2 and later; :func:`flags` prints them, ``legacy=True`` for the older
flat names)::

    --reward.remote_url http://JUDGE:8000/v1/openrlhf/RUN_ID?group_size=8
    --rollout.n_samples_per_prompt 8          # = group_size
    --algo.advantage.estimator dr_grpo        # r - mean(group), no division by the std
    --data.label_key answer                   # the dataset column with the reference answer

``dr_grpo`` is the estimator that subtracts the group mean only and leaves the advantages
unnormalised afterwards (``group_norm`` divides by the group's std, ``reinforce_baseline``
normalises over the batch). Leave ``--algo.dynamic_filtering_enable`` off: it drops the groups
whose scores are all equal, the very groups the judge rescues (``scores`` are the verifiable
rewards). Older versions: ``--remote_rm_url``, ``--n_samples_per_prompt``,
``--advantage_estimator dr_grpo``, ``--label_key``.

The ``.py`` route. A ``--reward.remote_url`` ending in ``.py`` is loaded as
``reward_func(queries, prompts, labels, **kwargs)``; :func:`make_reward_func` builds one that
computes the verifiable reward on the trainer side with your verifier (by default
:func:`answer_verifier`, the server's own) and posts it with the
sample, and keeps the verifiable reward when the judge server does not answer (in time), so a
judge that is down never stops the run. OpenRLHF runs it in a worker thread per sample
(``asyncio.to_thread``), and a sample waiting for its group holds its thread: with more
samples in flight than the event loop's thread pool has threads (``min(32, CPUs + 4)``),
groups complete only by the server's timeout. Prefer the URL route; use the ``.py`` route
for a verifier that must run on the trainer side. A file for it::

    # arena_reward.py
    from trainer_client.integrations.openrlhf import make_reward_func
    reward_func = make_reward_func(url="http://judge:8000", run_id="exp-1", group_size=8)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from ..verifier import verify_answer
from ._common import DEFAULT_SAMPLE_TIMEOUT_S, SampleScorer

Verifier = Callable[[str, Any], float]
"""``verifier(response, label) -> reward``."""


class RewardFunc(Protocol):
    """What :func:`make_reward_func` returns: OpenRLHF's ``reward_func``, and the
    ``scorer`` it posts through (``reward_func.scorer.close()`` when done)."""

    scorer: SampleScorer

    def __call__(
        self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **_: Any
    ) -> dict: ...


def endpoint(url: str, *, run_id: str = "default", group_size: int | None = None) -> str:
    """The judge server's per-sample URL for a run."""
    query = "" if group_size is None else f"?group_size={int(group_size)}"
    return f"{url.rstrip('/')}/v1/openrlhf/{run_id}{query}"


def flags(
    url: str, *, run_id: str = "default", group_size: int = 8, label_key: str | None = "answer",
    legacy: bool = False,
) -> list[str]:
    """The OpenRLHF command-line flags that send rewards to the judge server at ``url``."""
    names = (
        ("--remote_rm_url", "--n_samples_per_prompt", "--advantage_estimator", "--label_key")
        if legacy else
        ("--reward.remote_url", "--rollout.n_samples_per_prompt", "--algo.advantage.estimator",
         "--data.label_key")
    )
    out = [
        names[0], endpoint(url, run_id=run_id, group_size=group_size),
        names[1], str(group_size),
        names[2], "dr_grpo",
    ]
    if label_key:
        out += [names[3], label_key]
    return out


# -- the .py route ------------------------------------------------------------------------------

def answer_verifier(response: str, label: Any) -> float:
    """The verifiable reward: :func:`trainer_client.verifier.verify_answer`, the judge server's
    too, so that this route and the URL route reward a sample alike (1.0 when the final answer
    of ``response`` equals ``label``'s, else 0.0; no label: 0.0). Needs math-verify
    (``pip install 'reasoning-arena[verify]'``)."""
    return verify_answer(response, label)


# Special tokens a trainer leaves at the end of a decoded query (skip_special_tokens=False):
# these, and any ``<|name|>`` (a name of 1 to 40 characters, none of them ``|<>`` or space).
_TRAILING_TOKENS = ("</s>", "<eos>", "<end_of_turn>", "<\uff5cend\u2581of\u2581sentence\uff5c>")
_NAMED_TOKEN_MAX = 40


def _special_token_before(text: str, end: int) -> int:
    """The length of the special token that ends at ``text[end]`` (0: none)."""
    for token in _TRAILING_TOKENS:
        if text.endswith(token, 0, end):
            return len(token)
    if not text.endswith("|>", 0, end):
        return 0
    bar = text.rfind("|", max(0, end - 3 - _NAMED_TOKEN_MAX), end - 2)  # the name has no "|"
    name = text[bar + 1 : end - 2]
    if bar < 1 or text[bar - 1] != "<" or not name:
        return 0
    if any(c in "<>" or c.isspace() for c in name):
        return 0
    return end - bar + 1


def strip_trailing_special(text: str) -> str:
    """``text`` without the special tokens at its end, nor the whitespace around them (text
    that ends in no special token keeps its trailing whitespace). Linear time: peeled from the
    end, each token once; the regex it replaces was quadratic in a run of whitespace (a 120 KB
    query took 73 s and held the server's event loop)."""
    end, stripped = len(text), False
    while True:
        stop = end
        while stop and text[stop - 1].isspace():
            stop -= 1
        size = _special_token_before(text, stop)
        if not size:
            return text[:stop] if stripped else text
        end, stripped = stop - size, True


def response_of(query: str, prompt: str | None) -> str:
    """The response in ``query`` (prompt + response, as OpenRLHF sends it); both routes cut it
    out this way (the judge server's per-sample route imports it).

    ``query`` minus its ``prompt`` prefix; when the decoded query does not start with the
    prompt exactly (tokenizer round trips can change it), what follows the prompt's last
    occurrence; the whole query when the prompt is not in it. Trailing special tokens
    (``<|im_end|>``, ``</s>``, ...) are removed.
    """
    text = query
    if prompt:
        if query.startswith(prompt):
            text = query[len(prompt) :]
        elif (at := query.rfind(prompt)) >= 0:
            text = query[at + len(prompt) :]
    return strip_trailing_special(text)


def make_reward_func(
    verifier: Verifier = answer_verifier,
    *,
    url: str = "http://localhost:8000",
    run_id: str = "default",
    group_size: int = 8,
    timeout_s: float = DEFAULT_SAMPLE_TIMEOUT_S,
) -> RewardFunc:
    """An OpenRLHF ``reward_func(queries, prompts, labels, **kwargs)`` for the ``.py`` route.

    For each sample: the verifiable reward ``verifier(response, label)`` (the response is the
    query minus its prompt), posted with the sample to the judge server; the answer is
    ``{"rewards", "scores", "extra_logs"}`` as OpenRLHF reads it. When the server does not
    answer within ``timeout_s`` (or fails), the sample keeps its verifiable reward.
    """
    scorer = SampleScorer(url, run_id=run_id, group_size=group_size, timeout_s=timeout_s)

    def reward_func(
        queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **_: Any
    ) -> dict:
        rewards, scores, judge, judged, fell_back = [], [], [], [], []
        for query, prompt, label in zip(queries, prompts, labels):
            verifiable = float(verifier(response_of(query, prompt), label))
            label_text = None if label is None else str(label)
            result = scorer.score(
                SampleScorer.body(query, prompt, label_text, reward=verifiable), verifiable
            )
            rewards.append(result.value)
            scores.append(result.verifiable)
            judge.append(result.judge)
            judged.append(float(result.judged))
            fell_back.append(float(result.fell_back))
        return {
            "rewards": rewards,
            "scores": scores,
            "extra_logs": {"arena_judge": judge, "arena_judged": judged,
                           "arena_fell_back": fell_back},
        }

    reward_func.scorer = scorer  # type: ignore[attr-defined]  # a function's attribute
    return cast(RewardFunc, reward_func)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer_client.integrations.openrlhf --url http://judge:8000 ...``: print
    the OpenRLHF flags."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url", required=True, help="the judge server's HTTP base URL")
    parser.add_argument("--run-id", default="default")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--label-key", default="answer")
    parser.add_argument("--legacy", action="store_true", help="flat flags of OpenRLHF < 0.10.2")
    args = parser.parse_args(argv)
    out = flags(args.url, run_id=args.run_id, group_size=args.group_size,
                label_key=args.label_key, legacy=args.legacy)
    print(" \\\n".join(shlex.join(pair) for pair in zip(out[::2], out[1::2])))
    return 0


__all__ = ["answer_verifier", "endpoint", "flags", "main", "make_reward_func", "response_of"]

if __name__ == "__main__":
    sys.exit(main())
