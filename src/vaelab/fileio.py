"""Atomic file writes: a temp file in the same folder, fsync, os.replace, fsync of the folder.

A reader therefore sees either the old file or the whole new one, never a torn write. A write
that the system refuses (a full disk, a file-size limit, no permission, a read-only filesystem)
raises FileWriteError naming the file, and leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vaelab.errors import VaelabError

# errno -> what it means for the person who runs the command
WRITE_REFUSALS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file would pass the file-size limit (ulimit -f)",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the filesystem is read-only",
    errno.EIO: "the disk reported an input/output error",
}


class FileWriteError(VaelabError, OSError):
    """The system refused to write a file. An OSError too, so code that tolerates a failed
    write (a cache) goes on catching it as before."""


def write_error(path: Path, err: OSError) -> FileWriteError:
    code = err.errno or 0
    reason = WRITE_REFUSALS.get(code, err.strerror or str(err))
    name = errno.errorcode.get(code, "no errno")
    error = FileWriteError(f"could not write {path}: {reason} ({name})")
    error.errno = code  # set after: with (errno, text) arguments str() would add "[Errno N]"
    return error


def is_refusal(err: BaseException) -> bool:
    """Whether `err` is the system refusing a write (and not, say, a network error)."""
    named = isinstance(err, FileWriteError)
    return isinstance(err, OSError) and not named and err.errno in WRITE_REFUSALS


def replace(src: Path, dst: Path) -> None:
    """os.replace, with a refusal named after `dst`."""
    try:
        os.replace(src, dst)
    except OSError as err:
        if is_refusal(err):
            raise write_error(dst, err) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse to open folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_beside(path: Path) -> str:
    """An empty temp file `.NAME.PID.RANDOM.tmp` in path's folder, with the usual mode (mkstemp
    makes 0600); those of NAME that a killed process left are removed first."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        prefix = f".{path.name}.{os.getpid()}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise (write_error(path, err) if is_refusal(err) else err) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return tmp


def _remove_stale_temps(path: Path) -> None:
    """Temp files of `path` whose writer no longer runs (killed mid-write); a live writer's
    are its own."""
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                temp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temp file beside `path` for binary writing; on success it replaces `path`.

    The file's `name` is the temp path, so the body may check what it wrote before the
    replace; an exception anywhere removes the temp file and leaves `path` as it was (a
    refused write, also inside the body, becomes FileWriteError naming `path`).
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_refusal(err):
            raise write_error(path, err) from None
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
