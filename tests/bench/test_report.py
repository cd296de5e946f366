"""The comparison report: ratio direction, bars, table, argument checks, start failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench._load import ROOT, load_compare

compare = load_compare()


def _server(serial: float, p99: float, sync_ms: float, rss: float) -> dict[str, Any]:
    return {
        "rss_mb_at_rest": rss,
        "rss_mb_after": rss * 1.5,
        "bench": {
            "serial": {"msg_per_s": serial, "p50_ms": 1000 / serial},
            "parallel": {"msg_per_s": serial * 2, "p50_ms": p99 / 2, "p99_ms": p99},
            "fanout": {"delivered": 90, "expected": 100, "p50_ms": 3.0, "p99_ms": 9.0},
            "history": {"initial_sync_ms": sync_ms, "paginate_ms": 10.0},
            "joins": {"error": "RuntimeError: POST /join -> 500"},
        },
    }


def _row(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(r for r in rows if r["key"] == key)


def test_advantage_is_oriented_by_direction() -> None:
    # msg/s: Myelin 500 vs Synapse 25 is 20 times better
    assert compare.advantage(500.0, 25.0, True) == pytest.approx(20.0)
    # ms: Myelin 10 vs Synapse 200 is also 20 times better
    assert compare.advantage(10.0, 200.0, False) == pytest.approx(20.0)
    # worse is below 1 both ways
    assert compare.advantage(20.0, 40.0, True) == pytest.approx(0.5)
    assert compare.advantage(80.0, 40.0, False) == pytest.approx(0.5)
    # unmeasured, errors and zero denominators give no ratio
    assert compare.advantage(None, 25.0, True) is None
    assert compare.advantage("error", 25.0, True) is None
    assert compare.advantage(5.0, 0.0, True) is None
    assert compare.advantage(0.0, 5.0, False) is None


def test_bars_met_and_not_met() -> None:
    servers = {
        "myelin": _server(serial=600, p99=40, sync_ms=100, rss=50),
        "synapse": _server(serial=25, p99=1200, sync_ms=300, rss=120),
    }
    rows = compare.evaluate(servers)
    serial = _row(rows, "serial.msg_per_s")["vs"]["synapse"]
    assert serial == {"advantage": 24.0, "met": True}
    # 300 / 100 = 3x faster initial sync, the bar is 5x
    sync = _row(rows, "history.initial_sync_ms")["vs"]["synapse"]
    assert sync == {"advantage": 3.0, "met": False}
    # absolute bar: Myelin's own p99 of 40 ms is under 50 ms
    assert _row(rows, "parallel.p99_ms")["vs"]["synapse"]["met"] is True
    # memory: 120 / 50 = 2.4x less, the bar is half
    assert _row(rows, "rss_mb_at_rest")["vs"]["synapse"]["met"] is True
    # no bar on p50
    assert _row(rows, "serial.p50_ms")["vs"]["synapse"]["met"] is None
    # a failed scenario is an error value with neither ratio nor verdict
    joins = _row(rows, "joins.joins_per_s")
    assert joins["values"]["myelin"] == "error"
    assert joins["vs"]["synapse"] == {"advantage": None, "met": None}
    assert _row(rows, "fanout.delivered_pct")["values"]["synapse"] == 90.0


def test_absolute_bar_not_met_regardless_of_ratio() -> None:
    servers = {
        "myelin": _server(serial=30, p99=60, sync_ms=300, rss=200),
        "synapse": _server(serial=25, p99=6000, sync_ms=300, rss=120),
    }
    row = _row(compare.evaluate(servers), "parallel.p99_ms")
    assert row["vs"]["synapse"]["advantage"] == pytest.approx(100.0)
    assert row["vs"]["synapse"]["met"] is False
    assert _row(compare.evaluate(servers), "rss_mb_at_rest")["vs"]["synapse"]["met"] is False


def test_table_has_a_ratio_column_per_synapse_and_verdicts() -> None:
    servers = {
        "myelin": _server(serial=600, p99=40, sync_ms=100, rss=50),
        "synapse": _server(serial=25, p99=1200, sync_ms=300, rss=120),
        "synapse-pg": _server(serial=20, p99=1500, sync_ms=350, rss=130),
    }
    table = compare.render_table(compare.evaluate(servers), list(servers))
    lines = table.splitlines()
    assert "Myelin vs Synapse (SQLite)" in lines[0]
    assert "Myelin vs Synapse (PostgreSQL)" in lines[0]
    serial = next(line for line in lines if line.startswith("| serial sends |"))
    assert "| 600 | 25 | 20 |" in serial
    assert "24.00× met" in serial
    assert "30.00× met" in serial
    sync = next(line for line in lines if line.startswith("| initial /sync |"))
    assert "3.00× **not met**" in sync
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_synapse_only_table_has_no_ratio_columns() -> None:
    servers = {"synapse": _server(serial=25, p99=1200, sync_ms=300, rss=120)}
    table = compare.render_table(compare.evaluate(servers), ["synapse"])
    assert "Myelin vs" not in table
    assert "| serial sends | msg/s | higher | 25 | ≥ 20× (≈ 500 msg/s) |" in table


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--servers", "dendrite"],
        ["--servers", ""],
        ["--scenario", "serial,bogus"],
        ["--scale", "0"],
        ["--scale", "-1"],
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    done = _run(*args, "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert not (tmp_path / "out").exists()


def test_server_that_cannot_start_fails_clearly(tmp_path: Path) -> None:
    # An invalid MYELIN_* setting makes `myelin serve` exit at once.
    env = {**os.environ, "MYELIN_LOG_LEVEL": "not-a-level"}
    done = _run("--servers", "myelin", "--scale", "0.01", "--out", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "myelin serve exited before it answered" in done.stderr
    assert "not-a-level" in done.stderr  # the server's own complaint is shown
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["servers"]["myelin"]["error"].startswith("myelin serve exited")
    assert (tmp_path / "report.md").exists()
