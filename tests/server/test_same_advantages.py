"""The same advantages for the same group, seeds and judge: a pin against refactors.

The values were computed with the code before the service was split into its parts (issue 13)
and the fitter cut to what production calls; every design but ``adaptive`` gives them bit for
bit as the code of before both changes did (``adaptive`` changed on purpose in issue 15: its
values are pinned as they are now). A change that moves them changes what trainers get.
"""

import pytest

from judge_server.comparators.simulated import SimulatedComparator
from judge_server.core.service import ArenaService
from judge_server.store.memory import MemoryStore
from trainer_client.types import Group, RunSettings, Trace

STRENGTHS = [0.3, -1.2, 2.0, 0.1, -0.4, 1.1, -2.2, 0.7]

PINNED = {
    "live": [
        0.090119292657,
        -0.206377150287,
        0.004017446083,
        -0.268385484928,
        0.047013003266,
        1.0,
        -0.778450688316,
        0.112063581525,
    ],
    "round_robin": [
        0.317637014415,
        -1.0,
        0.317637014415,
        -0.007504612026,
        -0.007504612026,
        0.317637014415,
        -0.616306053835,
        0.678404234642,
    ],
    "swiss": [
        -0.117923568676,
        0.063802765595,
        0.839689601198,
        0.128212977565,
        -0.193768252879,
        0.128212977565,
        -0.072936825337,
        -0.775289675032,
    ],
    "single_anchor": [
        0.288637993051,
        -0.131278319576,
        -0.131278319576,
        0.183876802413,
        -0.131278319576,
        -0.131278319576,
        -0.131278319576,
        0.183876802413,
    ],
    "adaptive": [
        0.006760608956,
        -0.513060704652,
        0.941067730651,
        0.159620749416,
        -0.055186727707,
        0.6216237901,
        -0.924503760066,
        -0.236321686698,
    ],
}


@pytest.mark.parametrize("design", sorted(PINNED))
async def test_a_seeded_group_gets_the_pinned_advantages(design):
    judge = SimulatedComparator(position_bias=0.3, noise=0.5, soft=False, seed=7)
    service = ArenaService(comparator=judge, store=MemoryStore())
    await service.create_run(RunSettings(run_id="r", design=design))
    traces = tuple(Trace(f"trace {k} strength={s}", 1.0) for k, s in enumerate(STRENGTHS))
    (result,) = await service.rank("r", [Group("g", traces, prompt_id="p", prompt="2+2?")])
    await service.aclose()
    assert [round(a, 12) for a in result.advantages] == PINNED[design]
