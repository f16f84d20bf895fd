"""`latte eval adherence`: its arguments and the --json target are checked before minutes of evaluation."""

import json
import re

import pytest

from latte.cli.main import main
from latte.pipelines import LattePipeline


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", "{tmp}"], r"output .* is an existing folder; name a file inside it"),
        (["--json", ""], r"the output path is empty"),
        (["--json", "{tmp}/file/out.json"], r"is a file, not a folder"),
        (["--num-seen", "0"], r"--num-seen must be >= 1, got 0"),
        (["--num-seen", "1000"], r"num_seen must be in 1..\d+, got 1000"),
        (["--steps", "0"], r"--steps must be >= 1, got 0"),
        (["--batch-size", "-2"], r"--batch-size must be >= 1, got -2"),
        (["--guidance", "inf"], r"--guidance must be a finite number, got inf"),
        (["--seeds", "0", "-1"], r"--seeds must be from 0 to \d+, got -1"),
        (["--ground-truth", "-1"], r"--ground-truth must be >= 0, got -1"),
        (["--dtype", "bf16", "--quantize", "int8-dynamic"], r"int8-dynamic on CPU quantizes float32 models, not "),
        (["--baseline", "{tmp}/file"], r"corrupt JSON file .*file"),
        (["--from", "{tmp}/missing.json"], r"missing file: .*missing.json"),
        (["--from", "{tmp}/file", "--ground-truth", "3"], r"--ground-truth checks the analyser on rendered clips; "),
        (["--from", "{tmp}/base.json", "--model", "{tmp}"], r"--from reads saved readings; --model, --lora"),
        (["--baseline", "{tmp}/base.json", "--seeds", "7"], r"--baseline .*base.json holds none of the videos this "),
        (["--lora", "{tmp}/nowhere:0.5"], r"--lora .*nowhere:0.5: .* is not a LoRA adapter folder"),
    ],
)
def test_checked_before_the_evaluation(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(LattePipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the checks"))
    (tmp_path / "file").write_text("x")
    video = {"split": "seen", "prompt": "a red circle moving left", "seed": 0, "color": "red", "shape": "circle",
             "motion": "left", "read": {"color": "red", "shape": "circle", "motion": "left"}}
    (tmp_path / "base.json").write_text(json.dumps({"videos": [video]}))
    assert main(["eval", "adherence", *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latte eval: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.json", "file"]
