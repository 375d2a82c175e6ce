"""Which directories phasetime may write into, and one writer per directory.

phasetime only ever deletes what it wrote. A results directory is recognised by its
``.phasetime-results`` file (or, for directories of phasetime 0.1, by a ``run.json`` with
a ``schema_version``); ``--overwrite`` and ``--resume`` refuse any other non-empty
directory, naming what they found, and ``--overwrite`` removes only phasetime's own
files. A run holds :class:`DirectoryLock` (an advisory ``flock`` on ``.lock``) from before
its first write to its end: a second run on the same directory fails at once, naming the
process that holds it; a lock left by a killed process is free again (the kernel releases
it with the process), and the next run says it took it over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .files import (CELLS_DIR, DAMAGED_DIR, LOCK_FILE, MEASUREMENTS_FILE, OUTPUT_FILES, OWNER_FILE, RUN_FILE, SERVER_DIR,
                    StoreError, write_json)
from .schema import SCHEMA_VERSION
from .side import SIDE_FILES

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MODES = ("new", "overwrite", "resume")
_OURS = {OWNER_FILE, LOCK_FILE, RUN_FILE, MEASUREMENTS_FILE, CELLS_DIR, DAMAGED_DIR, SERVER_DIR, *SIDE_FILES,
         *OUTPUT_FILES}


def check_path(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """``out`` as a usable path, or a StoreError naming the flag: not empty, no NUL byte,
    not a symbolic link, not a file."""
    text = os.fspath(out)
    if not text.strip():
        raise StoreError(f"{flag} must not be empty")
    if "\0" in text:
        raise StoreError(f"{flag} {text!r} contains a NUL byte")
    path = Path(text).expanduser()
    try:
        if path.is_symlink():
            target = os.readlink(path)
            state = "" if path.exists() else ", which does not exist"
            raise StoreError(f"{flag} {path} is a symbolic link (to {target}{state}); give the directory itself")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{flag} {path} exists and is not a directory")
    except OSError as exc:
        raise StoreError(f"{flag} {path}: {exc.strerror or exc}") from None
    return path


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a phasetime results directory (this version's or 0.1's)."""
    if (path / OWNER_FILE).is_file():
        return True
    run = path / RUN_FILE
    if not run.is_file():
        return False
    try:
        data = json.loads(run.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "schema_version" in data and "experiment" in data


def foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that phasetime did not write."""
    return sorted(p.name for p in path.iterdir() if p.name not in _OURS and not p.name.startswith(f".{RUN_FILE}."))


def _started(path: Path) -> bool:
    """Whether a directory of ours holds more than a start-up leaves behind (the owner file,
    the lock, a temporary file of an interrupted write, an empty ``cells/``)."""
    for entry in path.iterdir():
        name = entry.name
        if name in (OWNER_FILE, LOCK_FILE) or (name.startswith(".") and name.endswith(".tmp")):
            continue
        if name == CELLS_DIR and entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()):
            continue
        return True
    return False


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class Plan:
    """What a run will do with its directory: start it, replace phasetime's files in it, or resume it."""

    path: Path
    action: str  # "create", "replace", "resume"


def plan(out: str | os.PathLike[str], mode: str) -> Plan:
    """Decide, without writing anything, what ``mode`` (new, overwrite, resume) does with ``out``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    path = check_path(out)
    try:
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE) if path.is_dir() else []
        if entries and (path / OWNER_FILE).is_file() and not _started(path):
            return Plan(path, "create")  # killed during start-up, before run.json: nothing to keep
    except OSError as exc:
        raise StoreError(f"--out {path}: cannot list it: {exc.strerror or exc}") from None
    if not entries:
        return Plan(path, "create")
    ours = is_ours(path)
    if not ours:
        what = f"it holds {_listing(entries)}"
        raise StoreError(f"--out {path} is not empty and not a phasetime results directory ({what}); "
                         "phasetime writes only into a new or empty directory or one of its own")
    if mode == "new":
        raise StoreError(f"--out {path} already holds results (pass --resume to continue them or --overwrite to "
                         "replace them)")
    return Plan(path, "replace" if mode == "overwrite" else "resume")


def create(path: Path) -> None:
    """Make ``path`` (and its parents) and mark it as phasetime's."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not (path / OWNER_FILE).exists():
        write_json(path / OWNER_FILE, {"format": "phasetime results directory", "schema_version": SCHEMA_VERSION,
                                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def clear_ours(path: Path) -> list[str]:
    """Remove phasetime's own files from ``path`` (for --overwrite); returns the names kept."""
    for name in sorted(_OURS - {LOCK_FILE, OWNER_FILE}):
        target = path / name
        try:
            if target.is_dir() and not target.is_symlink():
                if name == DAMAGED_DIR:
                    continue  # set-aside damage is the user's to delete
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        except OSError as exc:
            raise StoreError(f"cannot remove {target}: {exc.strerror or exc}") from None
    return foreign_entries(path)


class DirectoryLock:
    """An exclusive advisory lock on a results directory, held by one run (a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path / LOCK_FILE
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                h = self._holder()
                who = f"process {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('since', '?')}"
                raise StoreError(f"{self.path} is in use by another phasetime run ({who}); wait for it to finish or "
                                 "choose another --out") from None
        previous = self._holder()
        if previous.get("pid"):
            self.took_over = previous
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode())
        except OSError as exc:  # a full disk, say: the lock is held, but say why the run cannot go on
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: writing {self.file.name} failed: {exc.strerror or exc}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


__all__ = ["DirectoryLock", "Plan", "check_path", "clear_ours", "create", "foreign_entries", "is_ours", "plan"]
