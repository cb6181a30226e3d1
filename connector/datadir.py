"""The data folder holds ticket text and secrets: only the service's own user may read it.

The folder is created 0700 and every file in it 0600 — whatever the umask — and an existing
folder from an older version (0755 with a 0644 database) is tightened at start. SQLite gives
a database's -wal and -shm files the mode of the database file, so creating that file 0600
before SQLite opens it is what keeps them private too.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _owned(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid()


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with mode 0700; an existing folder is left as is."""
    if not path.exists():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path) -> Path:
    """Create an empty `path` with mode 0600 unless it exists; tighten it if it does."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    _tighten(path)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT) -> int:
    """os.open with mode 0600 for a new file (lock files beside the database)."""
    return os.open(path, flags, FILE_MODE)


def _tighten(path: Path) -> None:
    """Take away group and other rights from a file or folder this user owns."""
    info = path.lstat()
    if not _owned(info) or stat.S_ISLNK(info.st_mode):
        return
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    if stat.S_IMODE(info.st_mode) & ~wanted:
        os.chmod(path, stat.S_IMODE(info.st_mode) & wanted)


def secure_data_dir(path: Path) -> Path:
    """Create the data folder 0700, or tighten an existing one and every file in it."""
    private_dir(path)
    _tighten(path)
    for child in path.iterdir():
        with contextlib.suppress(FileNotFoundError):  # a -shm file just removed by SQLite
            _tighten(child)
    return path


def write_atomically(path: str | Path, text: str) -> None:
    """Write to a temporary file beside the target (mode 0600, as mkstemp makes it) and
    rename it: a reader (a running service checking the file) never sees half a file, and a
    failure leaves the old one."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
