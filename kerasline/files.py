"""Crash-safe file writing: stage beside the target, then rename; check free space before writing; lock files that
several processes share."""

import contextlib
import errno
import fcntl
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from kerasline.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a full quota
T = TypeVar("T")

STAGING_PREFIX = ".tmp-"
SPACE_MARGIN = 16 * 2**20  # bytes kept free beyond the estimate: metadata, logs, the file system's own needs
LOCK_WAIT_S = 60.0  # `locked` blocks are milliseconds long: a longer wait means a stopped (SIGSTOP) holder


def staging_dir(parent: Path) -> Path:
    """A hidden directory beside the final one (same file system, so rename is atomic), named by our pid."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))


def remove_stale_staging(parent: Path) -> None:
    """Staging left by a killed process (its pid is gone) is removed; a live writer's is left alone."""
    for path in parent.glob(f"{STAGING_PREFIX}*") if parent.is_dir() else []:
        pid = path.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Staged beside the target, then renamed over it: a reader sees the old file or the new one, never half."""
    staging = path.with_name(f"{STAGING_PREFIX}{os.getpid()}-{path.name}")
    try:
        staging.write_bytes(data)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)  # a full disk, a kill: nothing half-written is left beside the target
        raise


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed + SPACE_MARGIN:
        raise UserError(
            f"{directory}: not enough free disk space for {what}: about {_mib(needed + SPACE_MARGIN)} needed, "
            f"{_mib(free)} free; nothing was written"
        )


def try_lock(path: Path) -> int | None:
    """An exclusive flock(2) on `path` (created if missing), our pid written in it; the open fd, or None while
    another process holds it. The kernel drops a flock when its holder exits, however it dies (SIGKILL, OOM
    killer), so a lock is never stale: a dead holder's file is simply locked again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _still_at(fd, path):  # else its holder removed it between our open and our flock: lock the new file
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def unlock(fd: int, path: Path | None = None) -> None:
    """Releases a try_lock; with `path`, removes the file first, while still holding it (see _still_at)."""
    if path is not None:
        path.unlink(missing_ok=True)
    os.close(fd)


def lock_holder(path: Path) -> int | None:
    """The pid in a lock file; None without one, or before its holder has written it."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def locked(path: Path, what: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Holds the lock on `path` for the block, waiting up to wait_s for the process that holds it."""
    deadline = time.monotonic() + wait_s
    while (fd := try_lock(path)) is None:
        if time.monotonic() > deadline:
            holder = lock_holder(path)
            raise UserError(
                f"{what}: locked by process {holder or '(unknown)'} for over {wait_s:g} s ({path}); nothing was changed"
            )
        time.sleep(0.01)
    try:
        yield
    finally:
        unlock(fd)


def _still_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def out_of_space(error: BaseException | None) -> bool:
    """Whether `error`, or one it was raised from, says the disk (or the quota) is full. Writers say it their own
    way: OSError with errno ENOSPC (Python, numpy, h5py), tf.errors.ResourceExhaustedError whose message holds the
    errno's text (TensorFlow's file systems, TensorBoard's event writer), the text alone (libraries that re-raise)."""
    texts = [os.strerror(number) for number in NO_SPACE]  # "No space left on device", "Disk quota exceeded"
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if (isinstance(error, OSError) and error.errno in NO_SPACE) or any(text in str(error) for text in texts):
            return True
        error = error.__cause__ or error.__context__
    return False


def written_or_disk_full(write: Callable[[], T], what: str, where: Path, outcome: str | Callable[[], str]) -> T:
    """`write()`; if the disk fills up during it, a one-line UserError naming `what`, `where` and the `outcome` (what
    was kept; a callable is asked after the failure) instead of the writer's own error. The caller removes its
    staging."""
    try:
        return write()
    except Exception as e:
        if not out_of_space(e):
            raise
        _close_hdf5_files(where)
        quiet, sys.unraisablehook, sys.excepthook = (sys.unraisablehook, sys.excepthook), _ignore, _ignore
    try:
        gc.collect()  # what the failed write left, with its traceback; any complaint it makes as it goes is silenced
    finally:
        sys.unraisablehook, sys.excepthook = quiet
    outcome = outcome() if callable(outcome) else outcome
    raise UserError(f"{where}: no space left on device while writing {what}; {outcome}; free some space and rerun")


def _close_hdf5_files(where: Path) -> None:
    """h5py leaves a file that it failed to write open (Keras does not close it on an error). Left to itself, its
    objects fail to close it again as they are freed, each printing "Exception ignored ..." after our one line,
    and HDF5 crashes the interpreter at exit trying once more (SIGSEGV: exit 139, not 2). So it is closed here,
    while its objects live: the first close flushes and fails as the write did, the second releases the file
    (and its descriptor, so the space of its removed staging comes back)."""
    import h5py  # Keras's own dependency, already imported by its weights files

    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        if not Path(os.fsdecode(file_id.name)).resolve().is_relative_to(where.resolve()):
            continue
        file = h5py.File(file_id)
        for _ in range(2):
            try:
                file.close()
                break
            except Exception:  # the flush, on a full disk: the next close releases the file
                continue


def _ignore(*args) -> None:
    pass
