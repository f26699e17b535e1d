"""The status page served at ``/``: the figures of ``GET /v1/stats``, per run, for a person.

One self-contained HTML page (no external assets: clusters are often offline) whose script
reads ``/v1/stats`` every two seconds. On a server with API keys it asks for a key, keeps it in
the tab's session storage and sends it as a bearer token; it then shows that tenant's runs.
"""

STATUS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Reasoning Arena judge</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; }
  h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
  .muted { color: #667; }
  table { border-collapse: collapse; margin-top: 1rem; }
  th, td { padding: .35rem .8rem; border-bottom: 1px solid #dde; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  th { background: #f3f4f8; font-weight: 600; }
  .server span { margin-right: 1.5rem; }
  #error { color: #b00020; }
  form[hidden] { display: none; }
</style>
</head>
<body>
<h1>Reasoning Arena judge</h1>
<p class="server muted" id="server">loading&hellip;</p>
<form id="login" hidden>
  <label>API key <input id="key" type="password" autocomplete="off"></label>
  <button type="submit">Show my runs</button>
</form>
<p id="error"></p>
<table id="runs" hidden>
  <thead><tr>
    <th>run</th><th>groups</th><th>dead</th><th>judged</th><th>tied</th><th>judge failed</th>
    <th>refused</th><th>comparisons</th><th>cached</th><th>judge requests</th>
    <th>unread verdicts</th><th>p50 ms</th><th>p99 ms</th><th>in flight</th><th>pool anchors</th>
  </tr></thead>
  <tbody></tbody>
</table>
<script>
"use strict";
const fields = ["groups", "dead_fraction", "judged", "tied", "judge_failed", "refused",
                "comparisons", "cached_comparisons", "judge_requests", "unread_verdicts",
                "latency_p50_ms", "latency_p99_ms", "groups_in_flight", "pool_anchors"];
function show(name, value) {
  if (name === "dead_fraction") return (100 * value).toFixed(1) + "%";
  if (name.startsWith("latency")) return value.toFixed(1);
  return String(value);
}
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}
async function refresh() {
  const key = sessionStorage.getItem("arena-key");
  const headers = key ? {"Authorization": "Bearer " + key} : {};
  let response;
  try {
    response = await fetch("v1/stats", {headers});
  } catch (err) {
    document.getElementById("error").textContent = "server unreachable: " + err;
    return;
  }
  const login = document.getElementById("login");
  if (response.status === 401) {
    login.hidden = false;
    document.getElementById("server").textContent = "access: API keys (give one to see runs)";
    document.getElementById("runs").hidden = true;  // no stale runs of a previous key
    document.querySelector("#runs tbody").innerHTML = "";
    document.getElementById("error").textContent = key ? "unknown API key" : "";
    return;
  }
  if (!response.ok) {
    document.getElementById("error").textContent = "error " + response.status;
    return;
  }
  login.hidden = true;
  document.getElementById("error").textContent = "";
  const stats = await response.json();
  document.getElementById("server").innerHTML = "";
  for (const [label, value] of [["judge", stats.judge], ["queued calls", stats.queued_calls],
                                ["calls at the judge", stats.calls_in_flight],
                                ["groups in flight", stats.groups_in_flight],
                                ["access", stats.open ? "open (no API keys)" : "API keys"]]) {
    const span = document.createElement("span");
    span.textContent = label + ": " + value;
    span.id = "server-" + label.replaceAll(" ", "-");
    document.getElementById("server").appendChild(span);
  }
  const body = document.querySelector("#runs tbody");
  body.innerHTML = "";
  for (const run of stats.runs) {
    const row = document.createElement("tr");
    row.dataset.run = run.run_id;
    cell(row, run.run_id);
    for (const name of fields) cell(row, show(name, run[name]));
    body.appendChild(row);
  }
  document.getElementById("runs").hidden = false;
  document.body.dataset.loaded = "yes";
}
document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("arena-key", document.getElementById("key").value);
  refresh();
});
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
