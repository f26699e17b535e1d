"""The HTTP API on a real server: ranking, runs, probes, metrics, docs, the error shape."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from judge_server.comparators.simulated import SimulatedComparator
from judge_server.errors import StoreError
from judge_server.store.memory import MemoryStore

from .groups import dead, live


class SickComparator(SimulatedComparator):
    healthy = False

    async def check_health(self) -> bool:
        return self.healthy


class BrokenStore(MemoryStore):
    """get_run fails: with a store error for run "down", with a bug for any other run."""

    async def get_run(self, run_id):
        if run_id == "down":
            raise StoreError("sqlite store arena.sqlite3: disk I/O error")
        raise RuntimeError("secret detail of a bug")


async def client_for(server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str, field, message=None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "field", "message"}
    assert (error["code"], error["field"]) == (code, field)
    if message is not None:
        assert error["message"] == message
    assert "Traceback" not in response.text
    return error


async def test_rank_one_group_answers_its_result(http):
    strengths = [0.5, -1.0, 2.0, 0.0]
    response = await http.post("/v1/rank", json={"run_id": "r", "group": dead("d", strengths)})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["group_id"] == "d" and result["routed"] and result["status"] == "ok"
    assert sum(result["advantages"]) == pytest.approx(0.0, abs=1e-9)
    assert np.argmax(result["advantages"]) == np.argmax(strengths)
    assert len(result["strengths"]) == len(result["stderr"]) == 4


async def test_rank_several_groups_answers_results_in_order(http):
    columnar = {"group_id": "c", "texts": ["x strength=1", "y strength=0"], "rewards": [0, 0]}
    groups = [live("l", (1, 0, 0, 1)), dead("d"), columnar]
    response = await http.post("/v1/rank", json={"run_id": "r", "groups": groups})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["group_id"] for r in results] == ["l", "d", "c"]
    rewards = np.array([1.0, 0.0, 0.0, 1.0])
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    assert not results[0]["routed"] and results[0]["advantages"] == pytest.approx(expected.tolist())
    assert results[1]["routed"] and results[2]["routed"]
    assert results[2]["advantages"][0] > results[2]["advantages"][1]


async def test_rank_needs_exactly_one_of_group_and_groups(http):
    response = await http.post("/v1/rank", json={"run_id": "r"})
    assert_error(response, 400, "invalid_argument", "group")
    both = {"run_id": "r", "group": dead("a"), "groups": [dead("b")]}
    assert_error(await http.post("/v1/rank", json=both), 400, "invalid_argument", "groups")


async def test_runs_create_get_list_delete(http):
    response = await http.post(
        "/v1/runs", json={"settings": {"run_id": "exp-1", "design": "swiss", "scale": 2}}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["design"], created["scale"], created["order"]) == ("swiss", 2.0, "random")

    assert (await http.get("/v1/runs/exp-1")).json() == created
    assert created in (await http.get("/v1/runs")).json()["runs"]
    again = await http.post("/v1/runs", json={"settings": {"run_id": "exp-1"}})
    assert_error(again, 409, "already_exists", "run_id", "run_id: run 'exp-1' exists already")

    assert (await http.delete("/v1/runs/exp-1")).json() == {"deleted": True}
    assert (await http.delete("/v1/runs/exp-1")).json() == {"deleted": False}
    missing = await http.get("/v1/runs/exp-1")
    assert_error(missing, 404, "not_found", "run_id", "run_id: run 'exp-1' does not exist")


async def test_run_settings_are_checked(http):
    bad = await http.post("/v1/runs", json={"settings": {"run_id": "x", "design": "knockout"}})
    assert_error(bad, 400, "invalid_argument", "settings.design")
    typo = await http.post("/v1/runs", json={"settings": {"run_id": "x", "desing": "swiss"}})
    assert_error(typo, 422, "invalid_argument", "settings.desing")
    wrong = await http.post("/v1/runs", json={"settings": {"run_id": "x", "budget": "lots"}})
    assert_error(wrong, 422, "invalid_argument", "settings.budget")
    templated = await http.post(  # the simulated judge reads no prompt
        "/v1/runs", json={"settings": {"run_id": "x", "judge_template": "{first} {second}"}}
    )
    assert_error(templated, 400, "invalid_argument", "settings.judge_template")
    assert (await http.get("/v1/runs/x")).status_code == 404


async def test_probes(http, server):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    server.app.state.draining = True
    assert (await http.get("/readyz")).status_code == 503
    server.app.state.draining = False


async def test_readyz_is_503_while_the_judge_is_down(start_server):
    comparator = SickComparator()
    server = await start_server(comparator=comparator)
    async with await client_for(server) as http:
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
        comparator.healthy = True
        assert (await http.get("/readyz")).status_code == 200


async def test_metrics(http):
    await http.post("/v1/rank", json={"run_id": "r", "group": dead("d")})
    await http.post("/v1/rank", json={"run_id": "r", "group": {"group_id": "empty"}})
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert 'arena_groups_total{outcome="judged",run="r"} 1.0' in response.text
    assert 'arena_invalid_requests_total{transport="http"} 1.0' in response.text


async def test_docs_and_openapi(http):
    assert (await http.get("/docs")).status_code == 200
    schema = (await http.get("/openapi.json")).json()
    assert {"/v1/rank", "/v1/runs", "/v1/runs/{run_id}", "/readyz"} <= set(schema["paths"])
    assert "ErrorBody" in schema["components"]["schemas"]


async def test_openapi_declares_the_bearer_scheme_on_the_keyed_routes(http):
    schema = (await http.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]
    }
    assert schemes["apiKeyQuery"] | {"description": ""} == {
        "type": "apiKey", "in": "query", "name": "api_key", "description": ""
    }
    keyed = {
        ("post", "/v1/rank"), ("post", "/v1/runs"), ("get", "/v1/runs"),
        ("get", "/v1/runs/{run_id}"), ("delete", "/v1/runs/{run_id}"),
        ("get", "/v1/runs/{run_id}/stats"), ("get", "/v1/stats"),
    }
    for method, path in keyed:
        assert schema["paths"][path][method]["security"] == [{"bearer": []}], (method, path)
    # OpenRLHF sends no headers: either scheme (a list of alternatives).
    assert schema["paths"]["/v1/openrlhf/{run_id}"]["post"]["security"] == [
        {"bearer": []}, {"apiKeyQuery": []}
    ]
    for path in ("/healthz", "/readyz", "/metrics"):  # open: keep them inside the cluster
        assert "security" not in schema["paths"][path]["get"], path


async def test_every_error_has_the_one_shape(http):
    assert_error(await http.get("/v1/nothing"), 404, "not_found", None)
    assert_error(await http.put("/v1/rank"), 405, "method_not_allowed", None)


async def test_store_failure_is_503_and_a_bug_is_500_without_details(start_server):
    server = await start_server(store=BrokenStore())
    async with await client_for(server) as http:
        down = await http.post("/v1/rank", json={"run_id": "down", "group": dead("d")})
        assert_error(down, 503, "unavailable", None, "sqlite store arena.sqlite3: disk I/O error")
        bug = await http.post("/v1/rank", json={"run_id": "r", "group": dead("d")})
        assert_error(bug, 500, "internal", None, "internal error")
        assert "secret" not in bug.text
