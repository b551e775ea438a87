"""Recognise uploaded model files and unpack SavedModel archives without trusting them.

Standard library only: the API process imports this module to vet an upload before it is stored,
and the workers use it again to unpack the archive they are about to load.

An archive is checked entry by entry before anything is written (paths, entry types, counts,
declared sizes, expansion ratio); extraction then counts the bytes it really writes, because
declared sizes can lie, and works in a hidden sibling directory that is renamed into place only
once complete.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

ModelFileFormat = Literal["saved_model", "keras", "h5"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SAVED_MODEL_PB = "saved_model.pb"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip
_CHUNK = 1 << 20
_RATIO_FREE_BYTES = 1 << 20
# Tar headers and block padding are not part of the declared sizes; allow this much per entry on top.
_TAR_OVERHEAD_PER_ENTRY = 3 * 512
_NOT_A_MODEL = "The file is not a SavedModel archive, a .keras file or an .h5 file."


class ArchiveError(ValueError):
    """An upload that cannot be accepted; the message is one sentence a user can act on."""


@dataclass(frozen=True)
class ArchiveInfo:
    """What a checked archive holds.

    Args:
        entries: number of entries (files and directories).
        expanded_bytes: total size of the files once extracted.
        root: the folder holding saved_model.pb, relative to the archive root (`.` for the root
            itself); None when the archive holds no SavedModel (a .keras file).
    """

    entries: int
    expanded_bytes: int
    root: PurePosixPath | None


@dataclass(frozen=True)
class _Limits:
    max_entries: int
    max_expanded_bytes: int
    max_ratio: float


def detect_model_format(path: Path) -> ModelFileFormat:
    """The format of an uploaded model, judged by its content (uploads are stored without a file name)."""
    if path.is_dir():
        _saved_model_root([p.relative_to(path).as_posix() for p in path.rglob(SAVED_MODEL_PB)])
        return "saved_model"
    kind = _container_kind(path)
    if kind == "h5":
        return "h5"
    if kind == "zip":
        names = _zip_names(path)
        if any(PurePosixPath(n).name == SAVED_MODEL_PB for n in names):
            return "saved_model"
        if "config.json" in names:
            return "keras"
        raise ArchiveError(_NOT_A_MODEL)
    if kind == "tar":
        if any(PurePosixPath(n).name == SAVED_MODEL_PB for n in _tar_names(path, _limits(None, None, None))):
            return "saved_model"
        raise ArchiveError("The tar archive holds no saved_model.pb, so it is not a SavedModel archive.")
    raise ArchiveError(_NOT_A_MODEL)


def check_archive(
    path: Path,
    *,
    max_entries: int | None = None,
    max_expanded_bytes: int | None = None,
    max_ratio: float | None = None,
) -> ArchiveInfo:
    """Vet a zip or tar(.gz/.bz2/.xz) archive entry by entry without writing anything.

    Refuses absolute paths, `..` components, links, device and fifo entries, duplicate names,
    more than `max_entries` entries, more than `max_expanded_bytes` once expanded, an expansion over
    `max_ratio` times the archive's size, and truncated or corrupt archives (every entry is read,
    so a corrupt one is named). Limits left out come from the service settings.
    """
    limits = _limits(max_entries, max_expanded_bytes, max_ratio)
    return _walk(path, limits, dest=None)


def safe_extract(
    path: Path,
    dest: Path,
    *,
    max_entries: int | None = None,
    max_expanded_bytes: int | None = None,
    max_ratio: float | None = None,
) -> Path:
    """Check then extract a SavedModel archive into `dest` and return the SavedModel folder inside it.

    Extraction happens in a hidden sibling of `dest` that is renamed to `dest` only when complete,
    so an interrupted extraction never leaves a model that looks whole. When `dest` already exists
    (another process finished first) it is reused as is.
    """
    limits = _limits(max_entries, max_expanded_bytes, max_ratio)
    info = _walk(path, limits, dest=None)
    if info.root is None:
        raise ArchiveError("The archive holds no saved_model.pb, so it is not a SavedModel archive.")
    if dest.is_dir():
        return dest / info.root
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        _walk(path, limits, dest=staging)
        try:
            staging.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
            # A concurrent extraction of the same archive won the rename; its copy is complete.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest / info.root


def _limits(max_entries: int | None, max_expanded_bytes: int | None, max_ratio: float | None) -> _Limits:
    if max_entries is None or max_expanded_bytes is None or max_ratio is None:
        from service.settings import get_settings

        settings = get_settings()
        max_entries = settings.max_archive_entries if max_entries is None else max_entries
        if max_expanded_bytes is None:
            max_expanded_bytes = settings.max_archive_expanded_bytes
        max_ratio = settings.max_archive_ratio if max_ratio is None else max_ratio
    return _Limits(max_entries, max_expanded_bytes, max_ratio)


def _container_kind(path: Path) -> Literal["h5", "zip", "tar", "unknown"]:
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ArchiveError("The uploaded file cannot be read.") from exc
    if head.startswith(HDF5_SIGNATURE):
        return "h5"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(
            "The zip archive is truncated or corrupt (its central directory is unreadable)."
        ) from exc


def _tar_names(path: Path, limits: _Limits) -> Iterator[str]:
    # Names only, stopping at the first saved_model.pb; the full check comes later.
    try:
        with _open_compressed(path) as raw, tarfile.open(fileobj=_capped(raw, path, limits), mode="r|") as tf:
            for member in tf:
                yield member.name
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError("The tar archive is truncated or corrupt.") from exc


@contextmanager
def _open_compressed(path: Path) -> Iterator[IO[bytes]]:
    with path.open("rb") as f:
        head = f.read(6)
        f.seek(0)
        stream: Any
        if head.startswith(b"\x1f\x8b"):
            stream = gzip.GzipFile(fileobj=f, mode="rb")
        elif head.startswith(b"BZh"):
            stream = bz2.BZ2File(f, mode="rb")
        elif head.startswith(b"\xfd7zXZ\x00"):
            stream = lzma.LZMAFile(f, mode="rb")
        else:
            stream = f
        with stream:
            yield stream


class _CappedReader:
    """A read-only stream that refuses to produce more than `cap` bytes (tar headers can claim anything)."""

    def __init__(self, raw: IO[bytes], cap: int) -> None:
        self.raw, self.cap, self.count = raw, cap, 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.count + size > self.cap:
            size = self.cap - self.count + 1
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.cap:
            raise ArchiveError("The archive expands beyond the allowed size.")
        return data


def _capped(raw: IO[bytes], path: Path, limits: _Limits) -> Any:
    byte_cap = _byte_cap(limits, path.stat().st_size)
    return _CappedReader(raw, byte_cap + _TAR_OVERHEAD_PER_ENTRY * (limits.max_entries + 1) + 10240)


def _byte_cap(limits: _Limits, archive_size: int) -> int:
    """How many bytes the archive may expand to: the size limit, and max_ratio times its own size."""
    # Tiny archives of compressible files can exceed the ratio harmlessly; a bomb needs volume.
    return min(limits.max_expanded_bytes, max(int(limits.max_ratio * archive_size), _RATIO_FREE_BYTES))


def _entry_path(name: str) -> PurePosixPath:
    """The safe relative path of an entry, or ArchiveError naming it."""
    if "\x00" in name:
        raise ArchiveError(f"The archive entry {name!r} has a NUL character in its name.")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ArchiveError(
            f"The archive entry {name!r} has an absolute path; archive paths must be relative."
        )
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(
            f"The archive entry {name!r} contains '..'; archive paths must stay inside the archive."
        )
    return PurePosixPath(*parts)


def _saved_model_root(pb_paths: list[str]) -> PurePosixPath:
    roots = sorted({PurePosixPath(p).parent for p in pb_paths if len(PurePosixPath(p).parts) <= 2})
    if not roots:
        raise ArchiveError("No saved_model.pb was found at the archive root or inside one top folder.")
    if len(roots) > 1:
        names = ", ".join(str(r) for r in roots)
        raise ArchiveError(f"The archive holds several SavedModels ({names}); upload one at a time.")
    return roots[0]


class _Tally:
    """Counts entries and bytes against the limits, naming the entry that crosses one."""

    def __init__(self, limits: _Limits, archive_size: int) -> None:
        self.limits = limits
        self.byte_cap = _byte_cap(limits, archive_size)
        self.entries = 0
        self.bytes = 0
        self.names: set[PurePosixPath] = set()
        self.pb_paths: list[str] = []

    def add_entry(self, name: str, declared_size: int, *, is_dir: bool) -> PurePosixPath:
        rel = _entry_path(name)
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(f"The archive has more than {self.limits.max_entries} entries.")
        if rel in self.names and not is_dir:
            raise ArchiveError(f"The archive entry {name!r} appears more than once.")
        self.names.add(rel)
        if not is_dir and rel.name == SAVED_MODEL_PB:
            self.pb_paths.append(str(rel))
        self.add_bytes(name, declared_size)
        return rel

    def add_bytes(self, name: str, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_expanded_bytes:
            raise ArchiveError(
                f"The archive expands beyond the {self.limits.max_expanded_bytes} bytes allowed "
                f"(at entry {name!r})."
            )
        if self.bytes > self.byte_cap:
            raise ArchiveError(
                f"The archive expands more than {self.limits.max_ratio:g} times its size "
                f"(at entry {name!r}), "
                "which looks like an archive bomb."
            )

    def info(self) -> ArchiveInfo:
        root = _saved_model_root(self.pb_paths) if self.pb_paths else None
        return ArchiveInfo(self.entries, self.bytes, root)


def _walk(path: Path, limits: _Limits, dest: Path | None) -> ArchiveInfo:
    """Check every entry; with `dest`, also write the entries below it while counting real bytes."""
    kind = _container_kind(path)
    if kind == "zip":
        return _walk_zip(path, limits, dest)
    if kind == "tar":
        return _walk_tar(path, limits, dest)
    raise ArchiveError("The file is not a zip or tar archive.")


def _walk_zip(path: Path, limits: _Limits, dest: Path | None) -> ArchiveInfo:
    tally = _Tally(limits, path.stat().st_size)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(
            "The zip archive is truncated or corrupt (its central directory is unreadable)."
        ) from exc
    with zf:
        infos = zf.infolist()
        # Declared sizes first, so a bomb is refused before any byte is inflated.
        for info in infos:
            mode = info.external_attr >> 16
            if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
                raise ArchiveError(
                    f"The archive entry {info.filename!r} is {kind}; only files and folders are allowed."
                )
            if info.flag_bits & 0x1:
                raise ArchiveError(f"The archive entry {info.filename!r} is encrypted.")
            tally.add_entry(info.filename, info.file_size, is_dir=info.is_dir())
        result = tally.info()
        written = _Tally(limits, path.stat().st_size)
        for info in infos:
            rel = _entry_path(info.filename)
            if info.is_dir():
                if dest is not None:
                    _make_dir(dest, rel, info.filename)
                continue
            try:
                with zf.open(info) as src:
                    _copy(src, dest, rel, info.filename, info.file_size, written)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
                raise ArchiveError(f"The archive entry {info.filename!r} is truncated or corrupt.") from exc
            except NotImplementedError as exc:
                raise ArchiveError(
                    f"The archive entry {info.filename!r} uses an unsupported compression method."
                ) from exc
    return result


def _walk_tar(path: Path, limits: _Limits, dest: Path | None) -> ArchiveInfo:
    archive_size = path.stat().st_size
    tally = _Tally(limits, archive_size)
    current = "(archive header)"
    try:
        with _open_compressed(path) as raw:
            with tarfile.open(fileobj=_capped(raw, path, limits), mode="r|") as tf:
                for member in tf:
                    current = member.name
                    if member.issym() or member.islnk():
                        raise ArchiveError(
                            f"The archive entry {member.name!r} is a link; "
                            "only files and folders are allowed."
                        )
                    if not (member.isreg() or member.isdir()):
                        raise ArchiveError(
                            f"The archive entry {member.name!r} is a device, fifo or other special file; "
                            "only files and folders are allowed."
                        )
                    if member.issparse():
                        raise ArchiveError(
                            f"The archive entry {member.name!r} is a sparse file, which is not supported."
                        )
                    rel = tally.add_entry(
                        member.name, member.size if member.isreg() else 0, is_dir=member.isdir()
                    )
                    if member.isdir():
                        if dest is not None:
                            _make_dir(dest, rel, member.name)
                        continue
                    src = tf.extractfile(member)
                    if src is None:  # pragma: no cover - regular members always have data
                        raise ArchiveError(f"The archive entry {member.name!r} has no data.")
                    _copy(src, dest, rel, member.name, member.size, None)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(f"The tar archive is truncated or corrupt (at entry {current!r}).") from exc
    return tally.info()


def _make_dir(dest: Path, rel: PurePosixPath, name: str) -> None:
    target = dest.joinpath(*rel.parts)
    _ensure_inside(dest, target, name)
    try:
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"The archive entry {name!r} clashes with another entry.") from exc


def _copy(
    src: IO[bytes], dest: Path | None, rel: PurePosixPath, name: str, declared: int, tally: _Tally | None
) -> None:
    """Read (and with `dest`, write) one entry, refusing more bytes than it declared."""
    out: IO[bytes] | None = None
    if dest is not None:
        target = dest.joinpath(*rel.parts)
        _ensure_inside(dest, target, name)
        try:
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            # O_EXCL and O_NOFOLLOW: never overwrite, never write through a link.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise ArchiveError(f"The archive entry {name!r} clashes with another entry.") from exc
        out = os.fdopen(fd, "wb")
    try:
        seen = 0
        while chunk := src.read(_CHUNK):
            seen += len(chunk)
            if seen > declared:
                raise ArchiveError(f"The archive entry {name!r} holds more data than its header declares.")
            if tally is not None:
                tally.add_bytes(name, len(chunk))
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()


def _ensure_inside(dest: Path, target: Path, name: str) -> None:
    # _entry_path already refuses escapes; this guards against a link planted in dest by someone else.
    if not target.resolve().is_relative_to(dest.resolve()):
        raise ArchiveError(f"The archive entry {name!r} would be written outside the extraction folder.")
