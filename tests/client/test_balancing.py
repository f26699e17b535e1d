"""A client whose target lists several judge replicas (``ipv4:``, or ``dns:///`` of a
headless Service) spreads its batches over all of them."""

from __future__ import annotations

from trainer_client import AsyncArenaClient
from trainer_client.types import Group, Trace

from ..background import make_server


async def test_batches_go_round_robin_over_the_replicas_of_the_target():
    first = make_server()
    await first.start()
    second = make_server()
    second.host, second.grpc_port = "127.0.0.2", first.grpc_port  # the same port, another IP
    await second.start()
    try:
        target = f"ipv4:127.0.0.1:{first.grpc_port},127.0.0.2:{first.grpc_port}"
        async with AsyncArenaClient(target=target, run_id="r") as client:
            for k in range(8):
                group = Group(f"g{k}", tuple(Trace(f"g{k} {i} strength={i}", 1.0)
                                             for i in range(4)))
                assert (await client.rank([group])).outcomes[0].judged
        served = [(await s.service.run_stats("r"))["judged"] for s in (first, second)]
        assert sum(served) == 8 and min(served) >= 2, served
    finally:
        await first.stop(grace=1)
        await second.stop(grace=1)
