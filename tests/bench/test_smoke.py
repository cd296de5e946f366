"""The benchmark command end to end, at a tiny scale, against the reference Synapse only."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.bench._load import COMMAND, ROOT

PEER = ROOT.parent / "shared" / "peer"


@pytest.mark.slow
@pytest.mark.synapse
@pytest.mark.timeout(1800)  # the first Synapse start installs it from PyPI
def test_compare_against_synapse(tmp_path: Path) -> None:
    if not (PEER / "synapse.sh").exists() or not (PEER / "bench.py").exists():
        pytest.fail(f"the reference Synapse scripts are missing from {PEER}")
    done = subprocess.run(
        [str(COMMAND), "--servers", "synapse", "--scale", "0.05", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "results.json").read_text())
    synapse = report["servers"]["synapse"]
    assert synapse["version"].startswith("Synapse ")
    assert synapse["rss_mb_at_rest"] > 20
    assert synapse["rss_mb_after"] > 20
    bench = synapse["bench"]
    for scenario in ("serial", "parallel", "fanout", "history", "joins"):
        assert "error" not in bench[scenario], bench[scenario]
    assert bench["serial"]["messages"] == 50
    assert bench["serial"]["msg_per_s"] > 0
    assert bench["fanout"]["delivered"] == bench["fanout"]["expected"]
    values = {f["key"]: f["values"]["synapse"] for f in report["figures"]}
    assert all(isinstance(v, float) and v >= 0 for v in values.values()), values

    table = (tmp_path / "report.md").read_text()
    assert table.strip() == done.stdout.strip()
    serial = next(line for line in table.splitlines() if line.startswith("| serial sends |"))
    assert re.fullmatch(r"\| serial sends \| msg/s \| higher \| [\d.,]+ \| .+ \|", serial)
    assert "Synapse (SQLite)" in table
    # every server it started is stopped again
    with contextlib.suppress(psutil.NoSuchProcess):
        assert psutil.Process(synapse["pid"]).status() == psutil.STATUS_ZOMBIE
