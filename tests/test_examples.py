"""The scripts in examples/ (the API snippets of the docs) run as written, on small settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST_ARGS = {
    "text_to_video.py": ["--steps", "2", "--frames", "2"],
    "batches_and_callbacks.py": ["--steps", "2", "--frames", "2"],
    "paper_model.py": ["--steps", "2"],
}


def test_every_example_is_exercised():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(FAST_ARGS)


@pytest.mark.parametrize("script", sorted(FAST_ARGS))
def test_example_runs(script, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "-o", str(out / "result"), *FAST_ARGS[script]],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = [line.split("wrote ", 1)[1].split(" ")[0] for line in result.stdout.splitlines() if "wrote " in line]
    assert written and all(Path(path).exists() for path in written), result.stdout
