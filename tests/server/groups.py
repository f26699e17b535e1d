"""Groups for the server tests, as protobuf messages and as JSON bodies.

The simulated judge reads each trace's latent strength from its ``strength=X`` tag.
"""

from __future__ import annotations

from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb


def texts(group_id: str, strengths) -> list[str]:
    return [f"{group_id} trace {k} strength={s}" for k, s in enumerate(strengths)]


def dead(group_id: str, strengths=(0.5, -1.0, 2.0, 0.0), *, prompt_id="p", reward=1.0) -> dict:
    """A dead group (every reward equal) as a JSON body."""
    return {
        "group_id": group_id,
        "prompt_id": prompt_id,
        "prompt": "What is 2 + 2?",
        "traces": [{"text": t, "reward": reward} for t in texts(group_id, strengths)],
    }


def live(group_id: str, rewards=(1.0, 0.0, 1.0, 0.0), *, prompt_id="p") -> dict:
    """A group with different rewards as a JSON body."""
    return {
        "group_id": group_id,
        "prompt_id": prompt_id,
        "traces": [{"text": f"{group_id} trace {k}", "reward": r} for k, r in enumerate(rewards)],
    }


def to_proto(body: dict) -> pb.Group:
    """The message of a JSON group body."""
    fields = dict(body)
    traces = [pb.Trace(**t) for t in fields.pop("traces", None) or []]
    return pb.Group(traces=traces, **fields)
