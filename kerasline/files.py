"""Crash-safe file writing: stage beside the target, then rename; check free space before writing."""

import os
import shutil
import tempfile
from pathlib import Path

from kerasline.errors import UserError

STAGING_PREFIX = ".tmp-"
SPACE_MARGIN = 16 * 2**20  # bytes kept free beyond the estimate: metadata, logs, the file system's own needs


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
    staging.write_bytes(data)
    os.replace(staging, path)


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed + SPACE_MARGIN:
        raise UserError(
            f"{directory}: not enough free disk space for {what}: about {_mib(needed + SPACE_MARGIN)} needed, "
            f"{_mib(free)} free; nothing was written"
        )


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
