"""Getting images into the label store: files, uploads, zips, and server folders.

Every source becomes a list of `ImportEntry` (a display name and a way to read its bytes); each
entry is then checked and added on its own, so one bad file never stops an import:
- a video (mp4, mov, webm, mkv, avi, ...) adds its frames at `video_rate` frames per second, as
  images grouped by clip and frame time (pipeline/intake/video.py);
- duplicates by content (sha256 of the bytes, against the store and within the batch) are
  reported with the image they duplicate, not added again;
- non-images and corrupt files are decoded once with `pipeline.files.image_io.decode_image` and
  listed as rejected with its reason (EXIF orientation decides the stored width/height);
- the stored bytes are the original file's, unchanged.

Safety:
- zips are never extracted to disk: members are read into memory under a per-member and a
  total size cap (counted on the decompressed bytes actually read, not the header's claim),
  and member names with absolute paths or `..` parts (zip-slip) are rejected unread;
- a zip's total budget is charged with every byte decompressed, also for members rejected
  as too large, and is at most MAX_ZIP_RATIO x the zip's own size; once it is used up the
  remaining members are rejected unread, saying so;
- a server folder must lie under `allowed_root` after resolving `..` and symbolic links;
  symlinks inside it are not followed out of the root (a file link that escapes is rejected,
  folder links are not walked). The check that counts is made on the file actually opened
  (its descriptor's real path, /proc/self/fd), so a link swapped in between listing and
  reading is caught too (time of check / time of use); without /proc every component below
  the root is opened with O_NOFOLLOW instead;
- only regular files are read: a file is opened with O_NONBLOCK (a FIFO would block the
  import forever) and fstat'ed; FIFOs, sockets and devices are listed as rejected.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ImageError, StudioError
from ..files.image_io import MAX_PIXELS, decode_image
from ..store import Store
from ..store.blobs import sha256_bytes
from ..video.io import is_video_file
from .report import Duplicate, ImportReport

MAX_FILE_BYTES = 100 * 1024 ** 2          # one image file (or zip member), bytes
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_TOTAL_BYTES = 4 * 1024 ** 3       # decompressed bytes read from one zip
MAX_ZIP_RATIO = 100                       # ... and at most this many times the zip's own size
PROC_FD = Path("/proc/self/fd")           # where Linux shows what a descriptor really opened
SKIPPED_ZIP_PREFIXES = ("__MACOSX/",)     # macOS resource forks: not content, skipped silently


class IngestError(StudioError):
    """An import that cannot start (path missing, folder outside the allowed root)."""


@dataclass(frozen=True)
class ImportEntry:
    name: str                          # display name (relative path, zip member, upload name)
    source: str                        # provenance recorded with the image
    read: Callable[[], bytes]          # may raise IngestError/OSError (reported as rejected)
    path: Path | None = None           # the file itself, when there is one (videos are decoded from it)


# ------------------------------------------------------------------ adding one entry
def _mb(n: int) -> str:
    return f"{n / 1024 ** 2:g} MB"


def _read_capped(f, cap: int, why: str) -> bytes:
    data = f.read(cap + 1)
    if len(data) > cap:
        raise IngestError(why)
    return data


def _check_size(data: bytes, cap: int) -> bytes:
    if len(data) > cap:
        raise IngestError(f"larger than the {_mb(cap)} limit per file")
    return data


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a folder" if stat.S_ISDIR(mode) else
            "not a plain file")


def _open_under(path: Path, root: Path) -> int:
    """A descriptor for `path`, which must really be a file under `root` once opened.

    With /proc: open (following links inside the root), then check where the descriptor points.
    Without: walk from the root with O_NOFOLLOW on every component (any link is refused)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if PROC_FD.is_dir():
        fd = os.open(path, flags)
        try:
            real = Path(os.readlink(PROC_FD / str(fd)))
        except OSError:
            os.close(fd)
            raise
        if not _inside(real, root):
            os.close(fd)
            raise IngestError("symbolic link that leads outside the allowed folder; not read")
        return fd
    parts = path.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise IngestError("symbolic link (not followed on this system); not read") from None
        raise
    finally:
        os.close(fd)


def _read_file(path: Path, cap: int = MAX_FILE_BYTES, root: Path | None = None) -> bytes:
    """The file's bytes (at most `cap`); only regular files, and with `root` only files really under it."""
    fd = _open_under(path, root) if root is not None else \
        os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise IngestError(f"not a regular file ({_kind(mode)}); not read")
        return _read_capped(f, cap, f"larger than the {_mb(cap)} limit per file")


def import_entry(store: Store, entry: ImportEntry, report: ImportReport, *, author: str = "system",
                 max_pixels: int = MAX_PIXELS, video_rate: float | None = None) -> None:
    """Read, dedupe, decode-check and add one entry; the outcome goes into `report`."""
    if is_video_file(entry.name):
        _import_video_entry(store, entry, report, author=author, max_pixels=max_pixels, rate=video_rate)
        return
    data = _read_entry(entry, report)
    if data is None:
        return
    existing = store.find_image(sha256_bytes(data))
    if existing is not None:
        report.duplicates.append(Duplicate(entry.name, existing.id, existing.name))
        return
    try:
        decoded = decode_image(data, name=entry.name, max_pixels=max_pixels)
    except ImageError as e:
        report.rejected.append((entry.name, _reason(str(e), entry.name)))
        return
    except Exception as e:   # a decoder bug on one odd file must not stop the batch
        report.rejected.append((entry.name, f"cannot be decoded ({type(e).__name__}: {e})"))
        return
    record, created = store.add_image(data, PurePosixPath(entry.name).name, width=decoded.width,
                                      height=decoded.height, source=entry.source, author=author)
    if created:
        report.added.append(record)
    else:   # added by someone else between the check and the add
        report.duplicates.append(Duplicate(entry.name, record.id, record.name))


def _import_video_entry(store: Store, entry: ImportEntry, report: ImportReport, *, author: str, max_pixels: int,
                        rate: float | None) -> None:
    """A video's frames. A zip member, or a file under the import root (read through the root check on the
    opened file, never reopened by name), is copied to a temporary file first."""
    import tempfile

    from .video import import_video
    kwargs = dict(name=entry.name, rate=rate, source=entry.source, author=author, max_pixels=max_pixels)
    if entry.path is not None:
        import_video(store, entry.path, report, **kwargs)
        return
    data = _read_entry(entry, report)
    if data is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PurePosixPath(entry.name).name
        path.write_bytes(data)
        del data
        import_video(store, path, report, **kwargs)


def _read_entry(entry: ImportEntry, report: ImportReport) -> bytes | None:
    """An entry's bytes, or None with the reason it cannot be read listed in `report`."""
    try:
        return entry.read()
    except (IngestError, OSError, zipfile.BadZipFile, RuntimeError) as e:
        report.rejected.append((entry.name, f"cannot be read: {_safe_reason(e)}"))
        return None


def _safe_reason(e: Exception) -> str:
    """An exception's message without a server path (an OSError's filename is left out)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e)


def _reason(message: str, name: str) -> str:
    """ImageError messages start with the name; the report pairs them with it already."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def import_entries(store: Store, entries: Iterable[ImportEntry], report: ImportReport | None = None, *,
                   author: str = "system", max_pixels: int = MAX_PIXELS,
                   progress: Callable[[Iterable], Iterable] | None = None,
                   video_rate: float | None = None) -> ImportReport:
    """Import each entry (wrap the iteration with `progress`, e.g. tqdm); videos give a frame every 1/video_rate s."""
    report = report if report is not None else ImportReport()
    for entry in (progress(entries) if progress else entries):
        import_entry(store, entry, report, author=author, max_pixels=max_pixels, video_rate=video_rate)
    return report


# ------------------------------------------------------------------ sources -> entries
def _unsafe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def zip_entries(zf: zipfile.ZipFile, label: str, report: ImportReport, *,
                max_members: int = MAX_ZIP_MEMBERS, max_total: int = MAX_ZIP_TOTAL_BYTES,
                max_file: int = MAX_FILE_BYTES, budget_note: str = "") -> list[ImportEntry]:
    """Entries for a zip's files; unsafe or over-the-cap members go to `report.rejected`.

    `max_total` is charged with every byte decompressed (members rejected as too large too);
    when it is used up, the remaining members are rejected unread."""
    infos = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith(SKIPPED_ZIP_PREFIXES)]
    if len(infos) > max_members:
        report.rejected.append((label, f"the zip holds {len(infos):,} files; the limit is {max_members:,} "
                                       "- split it into smaller zips"))
        return []
    budget = {"left": max_total}
    used_up = f"the zip's limit of {_mb(max_total)} decompressed in total is used up{budget_note}"

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            if budget["left"] <= 0:
                raise IngestError(used_up)
            cap = min(max_file, budget["left"])
            with zf.open(info) as f:
                data = f.read(cap + 1)
            budget["left"] -= len(data)                 # every byte decompressed counts, kept or not
            if len(data) > cap:
                raise IngestError(f"larger than the {_mb(max_file)} limit per file" if cap == max_file
                                  else used_up)
            return data
        return read

    entries = []
    for info in infos:
        name = f"{label}/{info.filename}"
        if _unsafe_member(info.filename):
            report.rejected.append((name, "unsafe path in the zip (absolute or with '..'); not read"))
        else:
            entries.append(ImportEntry(name, f"zip:{label}", reader(info)))
    return entries


def folder_entries(folder: Path, report: ImportReport, *, root: Path | None = None,
                   label: str | None = None, max_file: int = MAX_FILE_BYTES) -> list[ImportEntry]:
    """Entries for the files under `folder` (sorted; hidden files skipped). With `root`, symlinks
    must stay inside it; folder symlinks are never walked."""
    label = label or folder.name
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                report.rejected.append((_rel(Path(dirpath) / d, folder, label), "symbolic link to a folder; not followed"))
        for fn in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(dirpath) / fn
            name = _rel(path, folder, label)
            if path.is_symlink() and root is not None and not _inside(path.resolve(), root):
                report.rejected.append((name, "symbolic link that leads outside the allowed folder; not read"))
                continue
            with contextlib.suppress(OSError):
                mode = path.lstat().st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    report.rejected.append((name, f"not a regular file ({_kind(mode)}); not read"))
                    continue
            # checked again on the file actually opened: the folder may change after this listing (no path
            # is handed on, so a video is read through the same check and copied, never opened by name)
            entries.append(ImportEntry(name, f"folder:{folder}", lambda p=path: _read_file(p, max_file, root)))
    return entries


def _rel(path: Path, folder: Path, label: str) -> str:
    return str(PurePosixPath(label, *path.relative_to(folder).parts))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# ------------------------------------------------------------------ public entry points
def import_uploads(store: Store, uploads: Sequence, *, author: str = "system",
                   max_pixels: int = MAX_PIXELS, max_file_bytes: int = MAX_FILE_BYTES,
                   progress=None, video_rate: float | None = None) -> ImportReport:
    """Browser uploads: each item a path (a Gradio temp file), or (name, path | bytes).

    A `.zip` upload is opened and its images imported (same caps and checks as import_zip).
    """
    report = ImportReport()
    with contextlib.ExitStack() as stack:
        entries: list[ImportEntry] = []
        for item in uploads:
            name, src = (item if isinstance(item, tuple) else (Path(item).name, item))
            if str(name).lower().endswith(".zip"):
                entries += _open_zip(stack, src, str(name), report, max_file_bytes)
            elif isinstance(src, (bytes, bytearray)):
                entries.append(ImportEntry(str(name), "upload", lambda b=bytes(src): _check_size(b, max_file_bytes)))
            else:
                entries.append(ImportEntry(str(name), "upload", lambda p=Path(src): _read_file(p, max_file_bytes),
                                     Path(src)))
        return import_entries(store, entries, report, author=author, max_pixels=max_pixels,
                              progress=progress, video_rate=video_rate)


def _open_zip(stack: contextlib.ExitStack, src, label: str, report: ImportReport,
              max_file: int = MAX_FILE_BYTES) -> list[ImportEntry]:
    import io
    try:
        fp = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray)) else src
        size = len(src) if isinstance(src, (bytes, bytearray)) else os.stat(src).st_size
        zf = stack.enter_context(zipfile.ZipFile(fp))
    except (zipfile.BadZipFile, OSError) as e:
        report.rejected.append((label, f"not a readable zip file ({_safe_reason(e)})"))
        return []
    max_total = min(MAX_ZIP_TOTAL_BYTES, MAX_ZIP_RATIO * size)
    note = f" ({MAX_ZIP_RATIO}× the zip's own size)" if max_total < MAX_ZIP_TOTAL_BYTES else ""
    return zip_entries(zf, label, report, max_file=max_file, max_total=max_total, budget_note=note)


def import_zip(store: Store, zip_src: str | os.PathLike | bytes, *, name: str | None = None,
               author: str = "system", max_pixels: int = MAX_PIXELS, max_file_bytes: int = MAX_FILE_BYTES,
               progress=None) -> ImportReport:
    label = name or (Path(zip_src).name if not isinstance(zip_src, (bytes, bytearray)) else "upload.zip")
    return import_uploads(store, [(label if label.lower().endswith(".zip") else label + ".zip", zip_src)],
                          author=author, max_pixels=max_pixels, max_file_bytes=max_file_bytes,
                          progress=progress)


def resolve_under_root(folder: str | os.PathLike, allowed_root: str | os.PathLike) -> tuple[Path, Path]:
    """(folder, root) resolved; IngestError unless the folder is inside the root."""
    text = str(folder)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):      # a NUL makes the OS calls fail with ValueError
        raise IngestError(f"the folder name {text!r} holds a control character (a NUL, a newline, ...); "
                          "type the folder's name as it is shown")
    root = Path(allowed_root).expanduser().resolve()
    if not root.is_dir():
        raise IngestError(f"the allowed import folder {root} does not exist; create it or change it")
    candidate = Path(folder).expanduser()
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not _inside(resolved, root):
        raise IngestError(f"{folder} is outside the allowed import folder {root}; "
                          "pick a folder inside it")
    if not resolved.is_dir():
        raise IngestError(f"{folder} is not a folder under {root}; check the name")
    return resolved, root


def import_server_folder(store: Store, folder: str | os.PathLike, *, allowed_root: str | os.PathLike,
                         author: str = "system", max_pixels: int = MAX_PIXELS,
                         max_file_bytes: int = MAX_FILE_BYTES, progress=None,
                         video_rate: float | None = None) -> ImportReport:
    """Every file under `folder` (recursively), which must lie under `allowed_root`."""
    resolved, root = resolve_under_root(folder, allowed_root)
    report = ImportReport()
    entries = folder_entries(resolved, report, root=root,
                             label=str(resolved.relative_to(root)) if resolved != root else root.name,
                             max_file=max_file_bytes)
    return import_entries(store, entries, report, author=author, max_pixels=max_pixels, progress=progress,
                          video_rate=video_rate)


def plan_paths(paths: Sequence[str | os.PathLike], stack: contextlib.ExitStack,
               report: ImportReport) -> list[ImportEntry]:
    """Command-line paths (files, folders, zips) -> entries; missing paths are rejected."""
    entries: list[ImportEntry] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            entries += folder_entries(path, report)
        elif not path.exists():
            report.rejected.append((str(raw), "no such file or folder"))
        elif path.suffix.lower() == ".zip":
            entries += _open_zip(stack, path, path.name, report)
        else:
            entries.append(ImportEntry(path.name, "cli", lambda p=path: _read_file(p), path))
    return entries


def import_paths(store: Store, paths: Sequence[str | os.PathLike], *, author: str = "system",
                 max_pixels: int = MAX_PIXELS, progress=None, video_rate: float | None = None) -> ImportReport:
    """The CLI's import: files, folders (recursive), zips and videos, each image checked and deduped."""
    report = ImportReport()
    with contextlib.ExitStack() as stack:
        entries = plan_paths(paths, stack, report)
        return import_entries(store, entries, report, author=author, max_pixels=max_pixels,
                              progress=progress, video_rate=video_rate)
