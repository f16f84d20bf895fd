"""benchmarks/gpu_suite.sh --smoke: the GPU suite's code on the CPU with tiny sizes, end to end."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["diffusers eager", "ours eager", "ours + TeaCache 0.1", "ours + TeaCache 0.2", "ours compiled", "ours fp8",
        "diffusers compiled", "ours guidance-parallel"]  # fmt: skip
CANNOT_RUN_ON_CPU = {"ours fp8": "CUDA GPU", "ours guidance-parallel": "2 CUDA GPUs"}


def test_smoke_run_prints_the_table_and_writes_every_row(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("machine: ")  # the machine block comes first
    report = json.loads(out.read_text())
    assert report["machine"]["cpu"] and report["setting"]["device"] == "cpu"
    rows = {r["row"]: r for r in report["rows"]}
    assert list(rows) == ROWS
    for name, row in rows.items():
        assert f"\n| {name} |" in done.stdout
        if name in CANNOT_RUN_ON_CPU:
            assert row["status"] == "skipped" and CANNOT_RUN_ON_CPU[name] in row["why"]
            assert f"| {name} | - | - | - | - | skipped: {row['why']} |" in done.stdout
            continue
        assert row["status"] == "ok", row
        for key in ("seconds", "speedup_vs_diffusers_eager", "peak_gib", "max_frame_diff"):
            assert math.isfinite(row[key]) and row[key] >= 0, (name, key, row[key])
        assert row["seconds"] > 0
    assert rows["ours eager"]["max_frame_diff"] == 0 and rows["diffusers eager"]["speedup_vs_diffusers_eager"] == 1
    for exact in ("diffusers eager", "ours compiled", "diffusers compiled"):  # same math, float rounding apart
        assert rows[exact]["max_frame_diff"] < 1e-4
