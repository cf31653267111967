"""The dashboard's activity math (node/dashboard/static/charts.js), run by Node.js: rates and
percentiles from differences of the node's cumulative counters (node/jobs/activity.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "node" / "dashboard" / "static"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

SCRIPT = """
import { ActivityHistory, percentile } from "%s";
const bounds = [1, 2, 5, 10];
const snap = (at, served, tokens, latency) => ({ at, buckets_ms: bounds,
  kinds: { generate: { served, failed: 0, tokens, latency } } });
const history = new ActivityHistory();
history.add(snap(0, 0, 0, [0, 0, 0, 0, 0]));
history.add(snap(2, 4, 100, [0, 4, 0, 0, 0]));      // 4 jobs of (1, 2] ms in 2 s
history.add(snap(4, 4, 100, [0, 4, 0, 0, 0]));      // nothing
history.add(snap(5, 14, 300, [0, 4, 0, 10, 0]));    // 10 jobs of (5, 10] ms in 1 s
history.add(snap(5, 14, 300, [0, 4, 0, 10, 0]));    // the same poll twice: ignored
const out = {
  rates: history.jobRates().generate.map((p) => [p.t, p.value]),
  tokens: history.tokenRates().map((p) => [p.t, p.value]),
  latency: history.latency(),
  p50: percentile([0, 4, 0, 0, 0], bounds, 0.5),
  p95_top: percentile([0, 0, 0, 0, 3], bounds, 0.95),
  empty: percentile([0, 0, 0, 0, 0], bounds, 0.5),
};
history.add(snap(1, 0, 0, [0, 0, 0, 0, 0]));         // the node restarted: start over
out.after_restart = history.snapshots.length;
console.log(JSON.stringify(out));
"""


def test_rates_and_percentiles_from_cumulative_counters(tmp_path: Path) -> None:
    script = tmp_path / "charts_check.mjs"
    script.write_text(SCRIPT % (STATIC / "charts.js").as_uri())
    run = subprocess.run([str(NODE), str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["rates"] == [[2, 2.0], [4, 0.0], [5, 10.0]]
    # tokens over a 10 s window: all 300 tokens by t=5 came in the 5 s since the first poll
    assert out["tokens"] == [[2, 50.0], [4, 25.0], [5, 60.0]]
    p50 = [p["value"] for p in out["latency"]["p50"]]
    assert p50[0] == 1.5  # the middle of (1, 2] for 4 jobs in it
    assert p50[2] == pytest.approx(5 + 5 * (7 - 4) / 10)  # rank 7 of 14: 3rd of 10 in (5, 10]
    assert out["p50"] == 1.5
    assert out["p95_top"] == 10  # above the last bound: the bound
    assert out["empty"] is None
    assert out["after_restart"] == 1
