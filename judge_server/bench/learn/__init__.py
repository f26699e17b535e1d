"""The learning benchmark: do rescued groups make a policy learn faster?

A small transformer, warm-started on a noisy teacher, learns addition chains by on-policy
policy gradient under several arms (GRPO, DAPO, DAPO with resampling, the arena, and three
controls); :mod:`.bench` runs them side by side. Modules: :mod:`.task` (problems, verifier,
monitors of form), :mod:`.policy` (the model, sampling), :mod:`.warm_start` (the fixture),
:mod:`.arms` (advantages per arm), :mod:`.rl` (one run), :mod:`.monitors` (evaluation,
gaming), :mod:`.summary` (steps to target, ratios, table), :mod:`.plot`, :mod:`.judge` (the
server process). Importing this package needs no torch.
"""

from .arms import ARMS
from .summary import TARGET

__all__ = ["ARMS", "TARGET"]
