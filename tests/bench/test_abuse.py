"""``arena-judge bench abuse`` at small scale: three cheap attacks against a real server
process; the table's structure and that the refusals were 4xx (no time is asserted)."""

from judge_server.bench import abuse
from judge_server.cli import main


def test_cheap_attacks_are_refused_with_4xx_and_tabled(capsys):
    attacks = ["settings", "request_id_reuse", "http_3x_huge_no_key"]
    result = abuse.run(attacks, scale="small", progress=False)
    rows = {row["attack"]: row for row in result["attacks"]}
    assert list(rows) == attacks
    for row in rows.values():
        assert {"outcome", "healthz_worst_s", "bystander_p99_s", "rss_growth_mb", "held",
                "target_met"} <= set(row)
        assert row["healthz_polls"] > 0 and row["bystander_groups"] > 0
        assert row["held"]["no_5xx"] and row["held"]["finite"] and row["held"]["outcome"]
    assert rows["settings"]["codes"] == ["400"] * 5
    assert rows["request_id_reuse"]["codes"] == ["200", "400"]
    assert rows["http_3x_huge_no_key"]["codes"] == ["401"] * 3
    table = abuse.format_table(result).splitlines()
    assert table[1].split()[:5] == ["attack", "healthz", "byst", "p99", "RSS"]
    assert [line.split()[0] for line in table[2:]] == attacks
    assert main(["bench", "abuse", "--attacks", "nonesuch"]) == 2
    assert "unknown attacks" in capsys.readouterr().err
