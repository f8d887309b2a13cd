"""Atomic writes: a failed stage never leaves a half-written artifact in place of a good one.

Files are written to a temporary sibling and renamed over the target. Whole folders are built in a
temporary sibling folder and swapped in with two renames; the old folder is removed only after the
new one is in place. A staging folder is named after its process, so one left by a process that died
mid-write (SIGTERM, SIGKILL, a power cut: no `except` runs) is removed by the next write of its target.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_text(path: Path, text: str, durable: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), durable)


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """`durable`: flush the file to disk before the rename (an artifact). Without: still never half-written,
    but a power cut may lose the newest version (a chat history, rewritten every turn)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replace_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target`, on any error it is discarded.

    >>> with replace_dir(out / "dataset") as tmp:
    ...     (tmp / "train.jsonl").write_text(...)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".new", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def sweep(target: Path) -> list[Path]:
    """Remove the staging folders of `target` whose process is gone (a model export killed mid-write
    leaves hundreds of MB); return them. Folders of live processes, and unnamed ones, stay."""
    gone = []
    for path in Path(target).parent.glob(f".{glob.escape(Path(target).name)}.*.new"):
        pid = path.name[len(Path(target).name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill there terminates the process: never ask, keep the folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or no way to tell: keep its folder
        return True
    return True
