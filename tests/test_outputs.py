"""The output rule (`latte.outputs`): nothing of the user's is deleted, replacements are whole and atomic."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from latte.outputs import MARKER, OutputExistsError, write_file, write_folder


def fill_with(*names):
    def fill(folder: Path) -> None:
        for name in names:
            (folder / name).write_text(name)

    return fill


def test_new_folder_is_marked(tmp_path):
    out = write_folder(tmp_path / "a" / "b", fill_with("x.txt"))
    assert sorted(os.listdir(out)) == [MARKER, "x.txt"]
    assert os.listdir(tmp_path / "a") == ["b"]  # no temporary sibling left


def test_foreign_folder_is_never_replaced_without_overwrite(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputExistsError, match=f"{victim} exists and holds files latte did not write.*--overwrite"):
        write_folder(victim, fill_with("frame.png"))
    assert os.listdir(victim) == ["thesis.txt"]
    assert sorted(os.listdir(tmp_path)) == ["victim"]
    write_folder(victim, fill_with("frame.png"), overwrite=True)
    assert sorted(os.listdir(victim)) == [MARKER, "frame.png"]


def test_own_and_empty_folders_are_replaced_whole(tmp_path):
    out = write_folder(tmp_path / "out", fill_with("old1", "old2"))
    write_folder(out, fill_with("new"))
    assert sorted(os.listdir(out)) == [MARKER, "new"]
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "empty", fill_with("new"))
    assert sorted(os.listdir(tmp_path)) == ["empty", "out"]


@pytest.mark.parametrize("target", ["", ".", "..", "~", "/", "CWD_PARENT"])
def test_protected_folders_are_refused_even_with_overwrite(tmp_path, monkeypatch, target):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    (work / MARKER).write_text("a marker does not make the working folder replaceable")
    monkeypatch.chdir(work)
    path = {"~": str(Path.home()), "CWD_PARENT": str(tmp_path)}.get(target, target)
    with pytest.raises((OutputExistsError, ValueError)):
        write_folder(path, fill_with("x"), overwrite=True)
    assert sorted(os.listdir(work)) == [MARKER, "keep.txt"]


def test_failed_fill_leaves_the_old_folder(tmp_path):
    out = write_folder(tmp_path / "out", fill_with("old"))

    def broken(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_folder(out, broken)
    assert sorted(os.listdir(out)) == [MARKER, "old"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_file_target_rules(tmp_path):
    path = write_file(tmp_path / "sub" / "v.txt", lambda tmp: Path(tmp).write_text("one"))
    write_file(path, lambda tmp: Path(tmp).write_text("two"))
    assert path.read_text() == "two" and os.listdir(path.parent) == ["v.txt"]
    with pytest.raises(IsADirectoryError, match="is an existing folder"):
        write_file(tmp_path / "sub", lambda tmp: Path(tmp).write_text("x"))
    with pytest.raises(ValueError, match="empty"):
        write_file("", lambda tmp: Path(tmp).write_text("x"))


def test_orphans_of_dead_writers_are_removed(tmp_path):
    # A writer killed mid-write leaves its temporary sibling; the next write to the same path removes it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".v.mp4.latte-{pid}-abc.tmp").write_text("half")
    (tmp_path / f".frames.latte-{pid}-xyz").mkdir()
    (tmp_path / f".v.mp4.latte-{os.getpid()}-live.tmp").write_text("a live writer's file stays")
    (tmp_path / ".unrelated.tmp").write_text("not ours")
    write_file(tmp_path / "v.mp4", lambda tmp: Path(tmp).write_text("x"))
    write_folder(tmp_path / "frames", fill_with("f"))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [".unrelated.tmp", f".v.mp4.latte-{os.getpid()}-live.tmp", "frames", "v.mp4"]
    )
