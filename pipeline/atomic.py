"""The one way a file is written in place: a temp file beside it, fsync, rename, fsync of the folder.

Readers see the old file or the new one, never half of one; a crash or an exception while writing
leaves the old file untouched and no temp file behind; after `publish` returns, the new file and
its name survive a power cut (the file is fsync'ed before the rename, the folder after it).
Scratch files (a /predict request's folder, removed after an hour) pass `durable=False`: still
atomic for readers and crashes of the process, without the two fsyncs (~2 ms a file).

    atomic_write(path, b"bytes" or "text")          # the whole content at once
    with atomic_path(path) as tmp:                  # a writer that wants a path (PIL, torch.save,
        image.save(tmp)                             # OpenEXR, open3d): write `tmp`, it becomes `path`

Temp names are unique (`.<stem>.<pid>-<random>.tmp<suffix>`, created with O_EXCL; the pid says who
left one behind), so two writers of the same file never share one; they keep the suffix so writers
that pick a format by file name still do. Files get the usual permissions (0o666 less the umask), not mkstemp's 0o600.
Long-lived writers (a shard's tar) take `temp_beside` and later `publish` or `discard`.
Folders (a cache entry built whole) are a different mechanism: pipeline/runtime/cache.py.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def temp_beside(path: str | os.PathLike) -> Path:
    """A new empty file with a unique hidden name in `path`'s folder (same file system: the rename is atomic)."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, path: str | os.PathLike, *, durable: bool = True) -> Path:
    """fsync the finished `tmp` (when durable), rename it over `path`, fsync the folder (when durable). -> path"""
    path = Path(path)
    if durable:
        fsync_file(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_folder(path.parent)
    return path


def discard(tmp: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on a clean exit it is published as `path`, on any error removed
    (and the error re-raised: callers word it for their users)."""
    tmp = temp_beside(path)
    try:
        yield tmp
        publish(tmp, path, durable=durable)
    except BaseException:
        discard(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> Path:
    """Write `data` (text as UTF-8) as the whole content of `path`, atomically (and durably unless told). -> path"""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
    return Path(path)


__all__ = ["atomic_write", "atomic_path", "temp_beside", "publish", "discard", "fsync_file", "fsync_folder"]
