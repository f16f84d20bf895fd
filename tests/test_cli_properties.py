"""Property test of `latte generate`'s argument handling (issue 16): for random flag values and output paths the
command either succeeds or exits 2 with exactly one line on stderr, never a traceback, and never deletes or
changes a file outside its output.

Loading is replaced by a real pipeline around tiny random components (built once), so every combination runs the
real checks, generation and export in well under a second; the runs with the shipped model are in
test_cli_generate.py."""

import functools
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latte.cli.main import main
from latte.pipelines import LattePipeline
from tiny_components import build_tiny_components


@functools.cache
def tiny_components() -> dict:
    return build_tiny_components(seed=0)


def load_tiny(cls, *args, **kwargs) -> LattePipeline:
    """`from_pretrained` replaced by a fresh pipeline around the tiny components, built once per process."""
    return LattePipeline(**tiny_components())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# New targets first: hypothesis favours the first values of a list.
OUTPUTS = ["new/nested/clip.mp4", "new/nested/frames", "new/nested/clip.gif", "foreign", "", ".", "..", "HOME",
           "notes.txt", "clip.avi"]
PROMPTS = ["a red circle", "a blue square moves left", "ünï ☃ -x"]
# Per flag: values that work (None: the flag left out), and anything of the flag's type.
VALID = {
    "--steps": st.one_of(st.none(), st.integers(1, 3)),
    "--frames": st.one_of(st.none(), st.integers(1, 2)),
    "--height": st.sampled_from([None, 16, 32]),
    "--width": st.sampled_from([None, 16, 32]),
    "--guidance": st.one_of(st.none(), st.floats(-10, 20)),
    "--fps": st.one_of(st.none(), st.floats(0.1, 1000)),
    "--seed": st.one_of(st.none(), st.integers(0, 2**64 - 4)),
    "--num-videos": st.one_of(st.none(), st.integers(1, 3)),
    "--batch-size": st.one_of(st.none(), st.integers(1, 3)),
    "--format": st.sampled_from([None, "mp4", "gif", "png"]),
    "--device": st.sampled_from([None, "cpu"]),
}
ints = st.one_of(st.integers(-3, 3), st.integers(-(2**70), 2**70))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-4, 0.1, 1000.5]))
ANY = {"--steps": ints, "--frames": st.integers(-2, 3), "--height": st.sampled_from([-16, 0, 1, 15]),
       "--width": st.sampled_from([-16, 0, 1, 15]), "--guidance": floats, "--fps": floats, "--seed": ints,
       "--num-videos": st.integers(-1, 3), "--batch-size": st.integers(-1, 3),
       "--device": st.sampled_from(["tpu", "meta", "cuda:7", "nonsense", "", "cuda"])}


@st.composite
def generate_flags(draw) -> dict:
    """Mostly working values, with up to two flags set to anything, so that both the checks and the
    successful paths behind them are reached."""
    flags = {flag: draw(values) for flag, values in VALID.items()}
    for flag in draw(st.lists(st.sampled_from(sorted(ANY)), max_size=2, unique=True)):
        flags[flag] = draw(ANY[flag])
    return flags


@st.composite
def prompt_lists(draw) -> list[str]:
    """One to three prompts; one time in eight none, or one of them empty."""
    prompts = draw(st.lists(st.sampled_from(PROMPTS), min_size=1, max_size=3))
    problem = draw(st.sampled_from([None] * 6 + ["none", "empty"]))
    return [] if problem == "none" else [*prompts, " "] if problem == "empty" else prompts


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompts=prompt_lists(),
    output=st.sampled_from(OUTPUTS),
    overwrite=st.booleans(),
    flags=generate_flags(),
)
def test_generate_arguments_succeed_or_fail_in_one_line(tmp_path, monkeypatch, capsys, prompts, output,
                                                         overwrite, flags):
    monkeypatch.setattr(LattePipeline, "from_pretrained", classmethod(load_tiny))
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    work, home = root / "work", root / "home"
    for folder, files in {work / "sentinel": ["a.txt", "b.mp4"], work / "foreign": ["thesis.txt"],
                          home: ["notes.txt"], work: ["notes.txt"]}.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            (folder / name).write_text(f"{folder.name}/{name}")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    target = str(home) if output == "HOME" else output
    argv = ["generate", *prompts, f"--output={target}", *(["--overwrite"] if overwrite else [])]
    argv += [f"{flag}={value}" for flag, value in flags.items() if value is not None]
    before = snapshot(root)
    capsys.readouterr()

    code = main(argv)

    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code == 2:
        # A run stopped mid-generation (e.g. non-finite latents) leaves its progress bar above the error line.
        lines = [line for line in err.split("\n") if line and not line.startswith("\rdenoising:")]
        assert len(lines) == 1 and lines[0].startswith("latte generate: error: "), (argv, err)
        assert err.endswith("\n"), (argv, err)
    else:
        assert code == 0, (argv, code, err)
        written = [Path(line.split()[1]) for line in out.splitlines()]
        assert written and all(path.exists() for path in written), (argv, out)
        assert all(math.isfinite(float(v)) for k, v in flags.items() if k in ("--guidance", "--fps") and v)
    # Nothing outside the output changed; the output itself only on success (a foreign folder: with --overwrite).
    replaced = (work / target).resolve() if target else None
    after = snapshot(root)
    for name, data in before.items():
        inside = replaced is not None and replaced in (root / name).resolve().parents
        if not (inside and code == 0):
            assert after.get(name) == data, (argv, name, code, err)
    assert os.getcwd() == str(work)


def test_tiny_pipeline_writes_every_video(tmp_path, monkeypatch, capsys):
    """A plain multi-video run through the stand-in loader writes every video."""
    monkeypatch.setattr(LattePipeline, "from_pretrained", classmethod(load_tiny))
    assert main(["generate", "a red circle", "a blue square", "--num-videos", "2", "--batch-size", "3",
                 "-o", str(tmp_path / "videos")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(Path(line.split()[1]).is_file() for line in lines)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
