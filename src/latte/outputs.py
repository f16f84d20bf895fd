"""The output rule: every command and API call that writes follows it, so nothing of the user's is ever lost.

- A **file** target is written to a temporary sibling and renamed onto the path (`write_file`): the path holds
  the old file or the complete new one, never half of either. An existing folder there is an error.
- A **folder** target (`write_folder`) is built in a temporary sibling, marked with `MARKER`, then swapped in.
  An existing folder is replaced only when it is empty or holds `MARKER` (this tool wrote it), or when the
  caller passes `overwrite=True` (`--overwrite`); otherwise the error names the path and the flag. The swap
  is one atomic rename exchange where the kernel has it (Linux), else two renames; the old folder is deleted
  last, after the new one is in place.
- `.`, `..`, `""`, the home folder, `/`, and any folder that holds the current directory or the home folder
  are never replaced, whatever `overwrite` says.
- Temporary siblings carry the writer's PID (`.NAME.latte-PID-XXXX`); ones left by a killed process are
  removed by the next write to the same path.
"""

import ctypes
import ctypes.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MARKER = ".latte-output"  # in every folder written by `write_folder`; its presence allows a later replace
_MARKER_TEXT = "written by latte; a later latte write may replace this folder\n"
_TMP_TAG = ".latte-"  # temporary siblings: f".{name}{_TMP_TAG}{pid}-{random}[.tmp]"


class OutputExistsError(FileExistsError):
    """A folder target exists and holds files this tool did not write."""


def _protected(path: Path) -> bool:
    """Folders never replaced: the working folder, home, `/`, and everything that contains one of them."""
    resolved = path.resolve()
    keep = (Path.cwd().resolve(), Path.home().resolve())
    return resolved == resolved.parent or any(resolved == k or resolved in k.parents for k in keep)


def check_file_target(path: str | os.PathLike) -> Path:
    """Fail before any work when `path` cannot take a file: empty, an existing folder, or under a file or a
    folder without write permission."""
    if str(path) == "":
        raise ValueError("the output path is empty (an unset shell variable?): name a file")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is an existing folder; name a file inside it or another path")
    _check_parent_writable(path)
    return path


def check_folder_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail before any work when `write_folder(path, ...)` would: see the module docstring for the rule."""
    if str(path) == "":
        raise ValueError("the output folder path is empty (an unset shell variable?): name a folder")
    path = Path(path)
    if path.exists() or path.is_symlink():
        if _protected(path):
            raise OutputExistsError(
                f"refusing to replace {path} ({path.resolve()}): it is the working folder, the home folder, "
                "/ or a folder holding one of them; name a new folder"
            )
        if not path.is_dir() or path.is_symlink():
            raise OutputExistsError(f"output {path} exists and is not a folder; name a folder")
        if not overwrite and not is_ours(path):
            raise OutputExistsError(
                f"output folder {path} exists and holds files latte did not write; name a new folder, or "
                "pass --overwrite (overwrite=True) to replace it and everything in it"
            )
    _check_parent_writable(path)
    return path


def is_ours(folder: Path) -> bool:
    """An empty folder, or one holding `MARKER`."""
    return (folder / MARKER).is_file() or not any(folder.iterdir())


def _check_parent_writable(path: Path) -> None:
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if existing != path.absolute() and not existing.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {existing} is a file, not a folder")
    parent = existing if existing != path.absolute() else path.absolute().parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no write permission in {parent}")


def write_file(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)` on a temporary sibling of `path`, then rename it onto `path`."""
    path = check_file_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())  # mkstemp creates 0600 files; give the usual rw-r--r--
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_folder(path: str | os.PathLike, fill: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Call `fill(tmp_folder)` on a new temporary sibling of `path`, mark it, then swap it in (see the module
    docstring). `fill` may create files and subfolders freely; a failure leaves `path` as it was."""
    path = check_folder_target(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        fill(tmp)
        (tmp / MARKER).write_text(_MARKER_TEXT)
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp makes it private
        if path.is_dir():
            check_folder_target(path, overwrite)  # again: another writer may have filled it meanwhile
            if not _exchange(tmp, path):
                old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                tmp = old
            shutil.rmtree(tmp)  # the old folder, now at the temporary name
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def default_mode(directory: bool = False) -> int:
    """The mode `open()` / `mkdir()` would give a new file / folder (0o666 / 0o777 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{_TMP_TAG}{os.getpid()}-"


def remove_orphans(folder: str | os.PathLike, name: str | None = None) -> None:
    """Delete the temporaries in `folder` (those of target `name` only, when given) whose writing process no
    longer exists: what a killed writer left behind."""
    folder = Path(folder)
    target = re.escape(name) if name is not None else r".+"
    pattern = re.compile(r"\." + target + re.escape(_TMP_TAG) + r"(\d+)-[^/]*")
    for sibling in folder.iterdir() if folder.is_dir() else ():
        match = pattern.fullmatch(sibling.name)
        if match and not _alive(int(match.group(1))):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if os.name == "posix" else None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where unsupported."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system or kernel cannot exchange
        return False
    raise OSError(errno, f"cannot replace {b}: {os.strerror(errno)}")
