"""Crash-safe file handling shared by every stage: atomic writes and output-directory locks.

An atomic write goes to a temporary file beside the target, is flushed and fsynced, then renamed over the
target, so a kill or a full disk leaves either the old file or the new one, never half of one, and no
temporary file behind (a SIGKILLed writer's is removed by the next write of that file). A directory lock
(`flock` on DIR/.delia.lock) keeps two processes from writing one output directory at once; the second one
fails at once with a clear message. The lock dies with its process: a killed run's lock file blocks no rerun.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from delia.errors import UserError

LOCK_NAME = ".delia.lock"
# Legal inside JSON strings, but `str.splitlines` and many editors break lines at them (delia.data.jsonl).
_SEPARATORS = {0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\u0085"}


def dumps_line(obj: Any, **kw: Any) -> str:
    """JSON text of `obj` (UTF-8 kept readable) with line-separator characters escaped; no trailing newline.

    Every delia writer uses it (re-exported as `delia.data.jsonl.dumps_line`); it lives here, below the data
    package, so that the atomic JSON writes need not import `delia.data`.
    """
    # These characters can only occur inside JSON strings, where the escape means the same character.
    return json.dumps(obj, ensure_ascii=False, **kw).translate(_SEPARATORS)


class LockError(UserError, RuntimeError):
    """Another process holds the output directory's lock; the message says which directory."""


def fsync_dir(path: str | Path) -> None:
    """Persist a directory entry (a rename or a new file) where the filesystem allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def _sweep_stale(path: Path) -> None:
    """Remove `.NAME.tmpPID` files of `path` left by killed processes (never a live writer's)."""
    with contextlib.suppress(OSError):  # an unreadable directory: the write itself reports it
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
            pid = tmp.name[len(path.name) + 5:]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`.

    On any error (a full disk, an interrupt) the temporary file is removed and the error re-raised, so
    `path` keeps its old content (or stays absent). A SIGKILL skips that cleanup: the temporary files of
    `path` whose process is gone are removed here, on the next write.
    """
    path = Path(path)
    _sweep_stale(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    kw = {"encoding": encoding} if "b" not in mode else {}
    try:
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Write JSON atomically; line separators are escaped (see `dumps_line`)."""
    write_text_atomic(path, dumps_line(data, indent=indent, default=str) + "\n")


@contextlib.contextmanager
def locked_dir(path: str | Path, what: str = "output directory") -> Iterator[Path]:
    """Create `path` if needed and hold an exclusive lock on it for the block.

    Raises:
        LockError: another process holds the lock.
    A directory this call created is removed again when the block fails before writing anything else into
    it, so a failed command leaves no empty output behind.
    """
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockError(f"{path}: another delia process is writing this {what} (it holds {lock}); wait for it "
                        f"to finish or choose another output") from None
    ok = False
    try:
        yield path
        ok = True
    finally:
        if created and not ok and [p.name for p in path.iterdir()] == [LOCK_NAME]:
            with contextlib.suppress(OSError):
                lock.unlink()
                path.rmdir()
        os.close(fd)  # closing releases the lock
