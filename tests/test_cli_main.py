"""The `latte` entry point: start-up, process settings, --version, Ctrl-C."""

import subprocess
import sys

import pytest

from latte.cli import main as cli


def test_cli_starts_without_torch_and_sets_passive_waiting():
    # OpenMP reads OMP_WAIT_POLICY once, when torch loads it: the CLI must set it before importing torch.
    code = (
        "import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); import latte.cli.main as m; "
        "assert 'torch' not in sys.modules; "
        "sys.argv = ['latte', 'info', 'Latte-S/2']; m.main(); "
        "print(os.environ['OMP_WAIT_POLICY'], os.environ['TRANSFORMERS_VERBOSITY'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE error"


def test_a_users_own_setting_wins():
    code = "import os; import latte.cli.main as m; m.main(['info', 'Latte-S/2']); print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"OMP_WAIT_POLICY": "ACTIVE", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ACTIVE"


def test_version(capsys):
    import latte

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"latte {latte.__version__}"


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    import latte.cli.info

    def interrupted(args):  # what any sub-command does on Ctrl-C
        raise KeyboardInterrupt

    def register(subparsers):
        subparsers.add_parser("info").set_defaults(run=interrupted)

    monkeypatch.setattr(latte.cli.info, "register", register)
    assert cli.main(["info"]) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["latte info: interrupted (exit 130); nothing partial was written"]


def test_loading_a_vae_first_is_quiet(tmp_path):
    """The trainer loads the VAE before anything else: torchao's import noise (kernel libraries built for other
    hardware, a missing triton), which diffusers' model classes trigger, must not reach the terminal."""
    from tiny_components import tiny_vae

    tiny_vae().save_pretrained(tmp_path / "vae")
    code = f"from latte.models.vae import load_vae; load_vae({str(tmp_path / 'vae')!r}); print('loaded')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr
    assert out.stderr == ""
