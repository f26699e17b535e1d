"""Tenants on a real server: API keys, a run namespace per tenant, pools kept per run, TLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from judge_server.transports.tenants import Authenticator, hash_key
from trainer_client import ArenaClient, AsyncArenaClient
from trainer_client._proto.reasoning_arena.v1 import arena_pb2 as pb
from trainer_client._proto.reasoning_arena.v1 import arena_pb2_grpc as pb_grpc
from trainer_client.types import Group, Trace

from .conftest import CHANNEL_OPTIONS
from .groups import dead, to_proto

KEYS = {"team-a": "key-of-a", "team-b": "key-of-b"}
API_KEYS = {tenant: [hash_key(key)] for tenant, key in KEYS.items()}
TIMEOUT = 30


def bearer(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {KEYS[tenant]}"),)


@pytest.fixture
async def keyed(start_server):
    server = await start_server(api_keys=API_KEYS)
    async with grpc.aio.insecure_channel(server.grpc_address, options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.ArenaStub(ch)
        await stub.CreateRun(pb.CreateRunRequest(settings=pb.RunSettings(run_id="b-run")),
                             metadata=bearer("team-b"), timeout=TIMEOUT)
        await stub.Rank(pb.RankRequest(run_id="b-run", groups=[to_proto(dead("g0"))]),
                        metadata=bearer("team-b"), timeout=TIMEOUT)
        yield server, stub, ch


def test_keys_map_to_tenants_and_bad_configuration_is_refused():
    auth = Authenticator(API_KEYS)
    assert auth.tenant("Bearer key-of-a") == "team-a"
    assert auth.tenant("bearer   key-of-b ") == "team-b"
    assert Authenticator().tenant(None) is None  # open server: no checks
    with pytest.raises(ValueError, match="not a SHA-256"):
        Authenticator({"team-a": ["key-of-a"]})  # a key where its digest belongs
    with pytest.raises(ValueError, match="another tenant"):
        Authenticator({"a": [hash_key("k")], "b": [hash_key("k")]})


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),),
                                      (("authorization", "key-of-a"),)])
async def test_grpc_without_a_valid_key_is_unauthenticated(keyed, metadata):
    _, stub, _ = keyed
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetRun(pb.GetRunRequest(run_id="b-run"), metadata=metadata, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "key-of-a" not in caught.value.details()


async def test_tenant_a_cannot_see_or_touch_the_run_of_tenant_b_over_grpc(keyed):
    """B's run name is, to A, a name that does not exist; A's run of that name is A's own."""
    server, stub, _ = keyed
    a = bearer("team-a")
    for run_id in ("b-run", "nowhere"):
        for call in (stub.GetRun, stub.GetRunStats):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(pb.GetRunRequest(run_id=run_id), metadata=a, timeout=TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert run_id in caught.value.details() and "team-b" not in caught.value.details()
        reply = await stub.DeleteRun(pb.DeleteRunRequest(run_id=run_id), metadata=a,
                                     timeout=TIMEOUT)
        assert not reply.deleted
    created = await stub.CreateRun(pb.CreateRunRequest(settings=pb.RunSettings(
        run_id="b-run", budget=7)), metadata=a, timeout=TIMEOUT)
    assert (created.run_id, created.budget) == ("b-run", 7)
    await stub.Rank(pb.RankRequest(run_id="b-run", groups=[to_proto(dead("x"))]), metadata=a,
                    timeout=TIMEOUT)
    stream = stub.RankStream(
        iter([pb.RankStreamRequest(run_id="b-run", group=to_proto(dead("y")))]),
        metadata=a, timeout=TIMEOUT,
    )
    assert [r.group_id async for r in stream] == ["y"]
    stats = await stub.GetRunStats(pb.GetRunRequest(run_id="b-run"), metadata=a,
                                   timeout=TIMEOUT)
    assert (stats.run_id, stats.groups, stats.judged) == ("b-run", 2, 2)
    # B's run is as B left it: one judged group, nothing from A, B's settings.
    b = bearer("team-b")
    stats = await stub.GetRunStats(pb.GetRunRequest(run_id="b-run"), metadata=b,
                                   timeout=TIMEOUT)
    assert (stats.run_id, stats.groups, stats.judged) == ("b-run", 1, 1)
    got = await stub.GetRun(pb.GetRunRequest(run_id="b-run"), metadata=b, timeout=TIMEOUT)
    assert (got.run_id, got.budget) == ("b-run", 0)
    assert (await server.service.get_run("b-run", tenant="team-b")).run_id == "b-run"
    assert (await stub.DeleteRun(pb.DeleteRunRequest(run_id="b-run"), metadata=a,
                                 timeout=TIMEOUT)).deleted
    assert (await stub.GetRun(pb.GetRunRequest(run_id="b-run"), metadata=b,
                              timeout=TIMEOUT)).run_id == "b-run"


async def test_tenant_a_cannot_see_or_touch_the_run_of_tenant_b_over_http(keyed):
    server, _, _ = keyed
    a = {"authorization": f"Bearer {KEYS['team-a']}"}
    b = {"authorization": f"Bearer {KEYS['team-b']}"}
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30) as http:
        assert (await http.get("/v1/runs/b-run")).status_code == 401
        response = await http.get("/v1/runs/b-run", headers={"authorization": "Bearer nope"})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthenticated"
        for method, path in [("GET", "/v1/runs/{}"), ("GET", "/v1/runs/{}/stats")]:
            theirs = await http.request(method, path.format("b-run"), headers=a)
            missing = await http.request(method, path.format("nowhere"), headers=a)
            assert theirs.status_code == missing.status_code == 404, (method, path)
            assert json.dumps(theirs.json()).replace("b-run", "nowhere") \
                == json.dumps(missing.json())
        assert (await http.delete("/v1/runs/b-run", headers=a)).json() == {"deleted": False}
        # A's "b-run" is A's own run; B's is untouched.
        response = await http.post("/v1/rank", json={"run_id": "b-run", "group": dead("x")},
                                   headers=a)
        assert response.status_code == 200
        assert (await http.get("/v1/runs/b-run/stats", headers=a)).json()["groups"] == 1
        assert (await http.get("/v1/runs/b-run/stats", headers=b)).json()["groups"] == 1
        # A sees its own runs only, by its own ids; B sees B's.
        await http.post("/v1/rank", json={"run_id": "a-run", "group": dead("g")}, headers=a)
        assert [r["run_id"] for r in (await http.get("/v1/runs", headers=a)).json()["runs"]] \
            == ["a-run", "b-run"]
        assert [r["run_id"] for r in (await http.get("/v1/runs", headers=b)).json()["runs"]] \
            == ["b-run"]
        stats = (await http.get("/v1/stats", headers=a)).json()
        assert [r["run_id"] for r in stats["runs"]] == ["a-run", "b-run"]
        assert stats["open"] is False
        assert [r["run_id"] for r in (await http.get("/v1/stats", headers=b)).json()["runs"]] \
            == ["b-run"]
        # Probes and metrics need no key (kubelet and Prometheus send none).
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200


async def test_health_service_needs_no_key(keyed):
    _, _, channel = keyed
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_pools_never_cross_runs(start_server):
    """Two runs (of two tenants) judging the same prompt id keep separate pools."""
    server = await start_server(api_keys=API_KEYS, anchors_per_group=3)
    service = server.service
    first = await service.rank("a-run", [Group("g1", tuple(
        Trace(f"a {k} strength={s}", 1.0) for k, s in enumerate((0, 1, 2, 3))), prompt_id="p")],
        tenant="team-a")
    assert first[0].anchors_used == 0
    pool_a = await service.pool_snapshot("a-run", tenant="team-a")
    assert pool_a["p"]
    (other,) = await service.rank("b-run", [Group("g1", tuple(
        Trace(f"b {k} strength={s}", 1.0) for k, s in enumerate((0, 1, 2, 3))), prompt_id="p")],
        tenant="team-b")
    assert other.anchors_used == 0  # a's anchors for prompt "p" are not b's
    pool_b = await service.pool_snapshot("b-run", tenant="team-b")
    assert {a.text[0] for a in pool_b["p"]} == {"b"}
    assert {a.text[0] for a in (await service.pool_snapshot("a-run", tenant="team-a"))["p"]} \
        == {"a"}


def test_client_with_a_key_ranks_and_without_one_falls_back_counted():
    from ..background import ServerThread

    thread = ServerThread("simulated", api_keys=API_KEYS)
    try:
        group = Group("g", tuple(Trace(f"t{k} strength={k}", 1.0) for k in range(4)))
        with ArenaClient(target=thread.grpc_address, run_id="mine", api_key="key-of-a") as c:
            (outcome,) = c.rank([group]).outcomes
            assert outcome.judged
        with ArenaClient(target=thread.grpc_address, run_id="mine", retries=0) as c:
            result = c.rank([group])
            assert result.outcomes[0].fell_back and result.outcomes[0].reason == "rejected"
            assert c.stats()["fell_back/rejected"] == 1
    finally:
        thread.stop()


def test_hash_key_command_prints_the_digest_of_a_key_on_stdin():
    out = subprocess.run(
        [sys.executable, "-m", "judge_server.cli", "hash-key"], input="key-of-a\n",
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == hash_key("key-of-a")
    assert json.dumps({"team-a": [out]})  # what ARENA_API_KEYS holds


async def test_grpc_and_http_over_tls(start_server, tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(key)
    cert.cert_chain_pems[0].write_to_path(chain)
    ca.cert_pem.write_to_path(ca_file)
    server = await start_server(tls_cert_file=chain, tls_key_file=key)
    assert server.http_url.startswith("https://")
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    async with grpc.aio.secure_channel(server.grpc_address, credentials) as channel:
        reply = await pb_grpc.ArenaStub(channel).Rank(
            pb.RankRequest(run_id="r", groups=[to_proto(dead("g"))]), timeout=TIMEOUT
        )
        assert reply.results[0].status == "ok"
    verify = ssl.create_default_context(cafile=str(ca_file))
    async with httpx.AsyncClient(base_url=server.http_url, verify=verify, trust_env=False) as http:
        assert (await http.get("/healthz")).status_code == 200
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused
            await http.get("/healthz")
    group = Group("g2", tuple(Trace(f"t{k} strength={k}", 1.0) for k in range(4)))
    for transport in ("grpc", "http"):
        async with AsyncArenaClient(target=server.grpc_address, http_url=server.http_url,
                                    transport=transport, tls=str(ca_file)) as client:
            (outcome,) = (await client.rank([group])).outcomes
            assert outcome.judged, transport
    async with grpc.aio.insecure_channel(server.grpc_address) as plain:
        with pytest.raises(grpc.aio.AioRpcError):  # plaintext is refused
            await pb_grpc.ArenaStub(plain).GetRun(pb.GetRunRequest(run_id="r"), timeout=5)
