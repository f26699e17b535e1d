"""The status page (``/``) in headless Chromium against a live server: after its script ran,
it shows the figures ``GET /v1/stats`` reports, per run; on a server with API keys it asks for
a key and shows no runs. Chromium is Debian's ``chromium`` (scripts/test.sh installs it)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from judge_server.transports.tenants import hash_key

from ..background import ServerThread
from .groups import dead, live

pytestmark = pytest.mark.timeout(90)
CHROMIUM_TIMEOUT_S = 60.0
VIRTUAL_TIME_MS = 5000  # the page's script fetches /v1/stats at once, then every 2 s
OPEN = "open (no API keys)"


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("Chromium is missing: apt-get install chromium (scripts/test.sh does)")
    return found


def chromium(tmp_path: Path, url: str, *options: str, budget_ms: int = VIRTUAL_TIME_MS):
    """Run headless Chromium on ``url`` with a fresh profile; the finished process."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    command = [
        chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-proxy-server", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *options, url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, cwd=tmp_path
    )
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


class Dom(HTMLParser):
    """What the tests read from a dumped DOM: elements by id, rows by run, the body."""

    VOID = {"meta", "link", "input", "br", "img", "hr"}

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.by_id: dict[str, tuple[dict[str, str | None], str]] = {}  # id: (attrs, text)
        self.rows: dict[str, list[str]] = {}  # data-run: the row's cells
        self.body: dict[str, str | None] = {}
        self._open: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._cells: list[str] = []  # of the row being read
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "body":
            self.body = attributes
        if tag not in self.VOID:
            self._open.append((tag, attributes, []))

    def handle_data(self, data):
        for _, _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag):
        if all(name != tag for name, _, _ in self._open):
            return  # a stray end tag
        while self._open:
            name, attrs, text = self._open.pop()
            if (element_id := attrs.get("id")) is not None:
                self.by_id[element_id] = (attrs, "".join(text))
            if name == "tr" and (run_id := attrs.get("data-run")) is not None:
                self.rows[run_id] = self._cells
            if name == "td":
                self._cells.append("".join(text))
            if name == "tr":
                self._cells = []
            if name == tag:
                break

    def text(self, element_id: str) -> str:
        return self.by_id[element_id][1].strip()

    def hidden(self, element_id: str) -> bool:
        return "hidden" in self.by_id[element_id][0]


def render(tmp_path: Path, url: str, ready: Callable[[Dom], bool]) -> Dom:
    """The page's DOM once ``ready`` (its fetch answered): more virtual time if it is not."""
    budget = VIRTUAL_TIME_MS
    for _ in range(3):
        dom = Dom(chromium(tmp_path, url, "--dump-dom", budget_ms=budget).stdout)
        if ready(dom):
            return dom
        budget *= 2
    raise AssertionError(f"the page's script did not finish: {sorted(dom.by_id)} {dom.body}")


def expected_cells(run: dict) -> list[str]:
    """A run's row as the page shows it (latencies: checked apart, to 0.1 ms)."""
    return [
        run["run_id"], str(run["groups"]), f"{100 * run['dead_fraction']:.1f}%",
        str(run["judged"]), str(run["tied"]), str(run["judge_failed"]), str(run["refused"]),
        str(run["comparisons"]), str(run["cached_comparisons"]), str(run["judge_requests"]),
        str(run["unread_verdicts"]), "p50", "p99",
        str(run["groups_in_flight"]),
        str(run["pool_anchors"]),
    ]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def servers():
    started: list[ServerThread] = []

    def start(*args, **options) -> ServerThread:
        started.append(ServerThread(*args, **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_the_page_shows_the_runs_of_a_live_server(servers, tmp_path):
    server = servers("simulated", anchors_per_group=3)
    batches = {
        "alpha": [dead("a-1"), dead("a-2"), dead("a-3", prompt_id="p2"), live("a-4"), live("a-5")],
        "beta": [dead("b-1"), live("b-2"), live("b-3"), live("b-4")],
    }
    with httpx.Client(base_url=server.http_url, trust_env=False, timeout=30) as http:
        for run_id, groups in batches.items():
            response = http.post("/v1/rank", json={"run_id": run_id, "groups": groups})
            assert response.status_code == 200, response.text
        stats = http.get("/v1/stats").json()
    runs = {run["run_id"]: run for run in stats["runs"]}
    assert sorted(runs) == ["alpha", "beta"]
    assert (runs["alpha"]["groups"], runs["alpha"]["dead_fraction"]) == (5, 0.6)
    assert (runs["beta"]["groups"], runs["beta"]["dead_fraction"]) == (4, 0.25)

    dom = render(tmp_path, server.http_url + "/", lambda d: d.body.get("data-loaded") == "yes")
    assert not dom.hidden("runs") and dom.hidden("login") and dom.text("error") == ""
    assert sorted(dom.rows) == ["alpha", "beta"]
    for run_id, run in runs.items():
        cells = dom.rows[run_id]
        assert len(cells) == 15, cells
        assert abs(float(cells[11]) - run["latency_p50_ms"]) <= 0.051, (cells, run)
        assert abs(float(cells[12]) - run["latency_p99_ms"]) <= 0.051, (cells, run)
        assert cells[:11] + ["p50", "p99"] + cells[13:] == expected_cells(run)
    assert dom.rows["alpha"][1:4] == ["5", "60.0%", "3"]
    assert dom.rows["beta"][1:4] == ["4", "25.0%", "1"]
    # no verdict cache: every comparison reached the judge
    assert int(dom.rows["alpha"][7]) == int(dom.rows["alpha"][9]) > 0
    assert dom.rows["alpha"][8] == "0" and int(dom.rows["alpha"][14]) > 0
    assert dom.text("server-judge") == f"judge: {stats['judge']}" == "judge: simulated"
    assert dom.text("server-access") == f"access: {OPEN}"
    assert dom.text("server-groups-in-flight") == "groups in flight: 0"
    assert dom.text("server-queued-calls") == "queued calls: 0"

    screenshot = tmp_path / "status.png"  # out of the repository: pytest's tmp_path
    chromium(tmp_path, server.http_url + "/", f"--screenshot={screenshot}",
             "--window-size=1200,600")
    assert png_size(screenshot) == (1200, 600)
    assert screenshot.stat().st_size > 5000  # a rendered page, not a blank one


def test_with_api_keys_the_page_asks_for_a_key_and_shows_no_runs(servers, tmp_path):
    server = servers("simulated", api_keys={"team-a": [hash_key("key-a")]})
    with httpx.Client(base_url=server.http_url, trust_env=False, timeout=30) as http:
        response = http.post(
            "/v1/rank", json={"run_id": "secret-run", "groups": [dead("s-1"), live("s-2")]},
            headers={"Authorization": "Bearer key-a"},
        )
        assert response.status_code == 200, response.text
        assert http.get("/v1/stats").status_code == 401

    dom = render(tmp_path, server.http_url + "/", lambda d: not d.hidden("login"))
    assert not dom.hidden("login") and dom.hidden("runs")
    assert dom.rows == {} and "secret-run" not in dom.html
    assert dom.text("error") == ""  # no key given yet: nothing is wrong
    # not "loading..." (as before a fix of the page): the page says what it waits for
    assert dom.text("server") == "access: API keys (give one to see runs)"
