"""Nothing lost in a run folder: the lock, resume checks before config.yaml, safe pruning, config ranges, Ctrl-C,
export by the output rule, captions that stay in their folder, orphan temporaries."""

import json
import logging
import multiprocessing
import os
import subprocess
import time

import pytest
import torch
import torch.multiprocessing as mp

from latte.cli.main import main
from latte.data.video import read_captions
from latte.outputs import MARKER, OutputExistsError
from latte.training import checkpoint as ckpt
from latte.training.config import load_config, save_config
from latte.training.export import export_run
from latte.training.lock import RunFolderBusyError, run_folder_lock
from latte.training.train import check_weights_fit, train
from training_support import distributed_cli_worker, free_port, make_components, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny components and a shared latent cache (built by the first run that needs it)."""
    root = tmp_path_factory.mktemp("safety")
    return root, make_components(root / "components")


def _config(setup, run_dir, **sections):
    root, components = setup
    return tiny_config(run_dir, components, root / "cache", **sections)


def _hold(run_dir, ready):
    with run_folder_lock(run_dir):
        ready.set()
        time.sleep(600)  # held until the test kills this process


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path / "run" (forked: no second start-up of torch)."""
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    process = context.Process(target=_hold, args=(tmp_path / "run", ready), daemon=True)
    process.start()
    assert ready.wait(30)
    yield process
    process.kill()
    process.join()


def test_a_held_run_folder_is_refused_naming_the_pid(setup, tmp_path, holder, capsys):
    cfg = _config(setup, tmp_path / "run")
    with pytest.raises(RunFolderBusyError, match=f"run folder .*run is in use .*PID {holder.pid}\\)"):
        train(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
    path = save_config(cfg, tmp_path / "run.yaml")
    for command in ("train", "cache"):  # `latte cache` locks the run folder when the cache is inside it
        assert main([command, str(path), f"data.cache_dir={tmp_path / 'run' / 'cache'}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"PID {holder.pid}" in err and str(tmp_path / "run") in err

    holder.kill()  # the kernel releases the lock of a dead process
    holder.join()
    with run_folder_lock(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock").read_text() == f"{os.getpid()}\n"


def test_torchrun_ranks_fail_together_when_the_folder_is_held(setup, tmp_path, holder):
    """Only rank 0 takes the lock; when it cannot, rank 1 fails too instead of waiting forever, and each rank
    reports it in the same one line (no traceback from the ranks that did not try the lock)."""
    path = save_config(_config(setup, tmp_path / "run"), tmp_path / "run.yaml")
    context = mp.spawn(distributed_cli_worker, args=(2, free_port(), ["train", str(path)], tmp_path), nprocs=2,
                       join=False)
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "a rank waits forever"
    finally:
        for process in context.processes:
            process.kill()
    for rank in range(2):
        report = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert report["code"] == 2, rank
        assert report["stderr"] == (f"latte train: error: run folder {tmp_path / 'run'} is in use by another latte "
                                    f"process (PID {holder.pid}); wait for it to finish or stop it, or set "
                                    "output_dir to another folder\n"), rank


def test_resume_with_another_model_is_refused_before_config_yaml(setup, tmp_path):
    cfg = _config(setup, tmp_path / "run", train={"steps": 2})
    train(cfg)
    written = (cfg.run_dir / "config.yaml").read_bytes()
    changed = _config(
        setup,
        tmp_path / "run",
        model={"args": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16}},
        train={"steps": 4, "prediction_type": "v_prediction"},
    )
    message = (
        r"cannot resume .*run from step-00000002.pt with these settings: model.args.num_layers: 1 -> 2; "
        r"train.prediction_type: 'epsilon' -> 'v_prediction' \(old -> new\); .*output_dir to a new folder"
    )
    with pytest.raises(ValueError, match=message):
        train(changed)
    assert (cfg.run_dir / "config.yaml").read_bytes() == written
    # Settings that may change on resume (here: more steps) resume as before.
    assert train(_config(setup, tmp_path / "run", train={"steps": 3}))["step"] == 3


def test_weights_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match=r"cannot resume from x.pt: 1 of its weights .*weight: \(3, 2\) in the"):
        check_weights_fit(torch.nn.Linear(2, 2), {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, "x.pt")


def test_pruning_counts_only_readable_checkpoints(setup, tmp_path, caplog):
    """The issue's probe: a corrupt step-16 and keep_last=1 must not make a run to step 14 delete its own."""
    cfg = _config(setup, tmp_path / "run", train={"steps": 14}, log={"ckpt_every": 4, "keep_last": 1})
    corrupt = ckpt.checkpoint_path(cfg.run_dir, 16)
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert [p.name for p in ckpt.list_checkpoints(cfg.run_dir)] == ["step-00000014.pt", "step-00000016.pt"]
    assert corrupt.read_bytes() == b"not a checkpoint"  # unreadable files are left alone
    assert f"leaving unreadable checkpoint {corrupt} alone" in caplog.text
    assert ckpt.load_latest(cfg.run_dir)[0].name == "step-00000014.pt"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.warmup_steps=-10", "train.warmup_steps=-10 is not allowed; it must be >= 0"),
        ("log.sample_every=-1", "log.sample_every=-1 is not allowed; it must be >= 0"),
        ("log.keep_last=0", "log.keep_last=0 is not allowed; it must be >= 1"),
        ("train.lr=0", "train.lr=0.0 is not allowed; it must be a finite number > 0"),
        ("train.lr=.nan", "train.lr=nan is not allowed"),
        ("train.adam_betas=[0.9, 1.5]", r"train.adam_betas\[1\]=1.5 is not allowed; it must be in \[0, 1\)"),
        ("data.num_workers=-2", "data.num_workers=-2 is not allowed; it must be >= 0"),
        ("train.seed=-1", r"train.seed=-1 is not allowed; it must be in \[0, 2\*\*32\)"),
    ],
)
def test_config_values_out_of_range_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def _interrupt_at_step(monkeypatch, step):
    import latte.training.train as trainer

    real, calls = trainer.update_ema, []

    def update_then_interrupt(*args):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(trainer, "update_ema", update_then_interrupt)


def test_ctrl_c_says_what_was_kept_and_resumes(setup, tmp_path, monkeypatch, caplog):
    cfg = _config(setup, tmp_path / "run", train={"steps": 4}, log={"ckpt_every": 2})
    _interrupt_at_step(monkeypatch, 3)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        train(cfg)
    kept = ckpt.checkpoint_path(cfg.run_dir, 2)
    assert f"interrupted: kept {kept} (step 2); rerun the same command to resume" in caplog.text
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]  # no half-written files
    monkeypatch.undo()
    assert train(cfg)["step"] == 4  # the lock was released; the run resumes

    caplog.clear()
    early = _config(setup, tmp_path / "early", train={"steps": 4}, log={"ckpt_every": 2})
    _interrupt_at_step(monkeypatch, 1)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        train(early)
    assert "interrupted before the first checkpoint" in caplog.text


def test_orphan_temporaries_of_dead_writers_are_removed(setup, tmp_path):
    cfg = _config(setup, tmp_path / "run", train={"steps": 1})
    folder = cfg.run_dir / ckpt.CHECKPOINT_DIR
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = folder / f".step-00000004.pt.latte-{dead.pid}-abc.tmp"
    live = folder / f".step-00000008.pt.latte-{os.getpid()}-abc.tmp"  # a writer that still runs
    orphan.write_bytes(b"half")
    live.write_bytes(b"half")
    train(cfg)
    assert not orphan.exists() and live.exists()


@pytest.fixture(scope="module")
def run(setup, tmp_path_factory):
    cfg = _config(setup, tmp_path_factory.mktemp("export") / "run", train={"steps": 1})
    train(cfg)
    return cfg.run_dir


def test_export_keeps_unrelated_folders_unless_overwrite(run, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("hi")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_run(run, victim)
    assert (victim / "thesis.txt").read_text() == "hi"
    assert main(["export", str(run), "-o", str(victim)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (victim / "thesis.txt").is_file()

    assert main(["export", str(run), "-o", str(victim), "--overwrite"]) == 0
    assert (victim / MARKER).is_file() and not (victim / "thesis.txt").exists()
    export_run(run, victim)  # a folder latte wrote is replaced without --overwrite
    assert (victim / "model_index.json").is_file()


def test_export_of_a_foreign_checkpoint_says_what_it_is(run, tmp_path, capsys):
    original, bare = tmp_path / "original.pt", tmp_path / "bare.pt"
    torch.save({"ema": {"w": torch.zeros(2)}}, original)
    torch.save({"w": torch.zeros(2), "b": torch.zeros(2)}, bare)
    with pytest.raises(ValueError, match="not a `latte train` checkpoint: it holds the keys 'ema' and lacks step, "):
        export_run(run, tmp_path / "out", checkpoint=original)
    with pytest.raises(ValueError, match=r"holds a bare state dict \(2 tensors\).*`latte convert"):
        export_run(run, tmp_path / "out", checkpoint=bare)
    assert main(["export", str(run), "-o", str(tmp_path / "out"), "--checkpoint", str(original)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", ["../elsewhere.mp4", "clips/../../elsewhere.mp4", "/etc/passwd"])
def test_captions_may_not_point_outside_their_folder(tmp_path, path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "captions.jsonl").write_text(f'{{"path": "{path}", "caption": "x"}}\n')
    with pytest.raises(ValueError, match=f"line 1: path '{path}' points outside the video folder"):
        read_captions(root / "captions.jsonl", root)
