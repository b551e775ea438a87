"""Safe archive checks and extraction (no TensorFlow needed)."""

from __future__ import annotations

import io
import random
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from service.vetting.archives import ArchiveError, check_archive, detect_model_format, safe_extract

LIMITS = {"max_entries": 100, "max_expanded_bytes": 10 * 1024 * 1024, "max_ratio": 200.0}
MODEL_FILES = {
    "saved_model.pb": b"graph" * 100,
    "variables/variables.index": b"idx" * 50,
    "fingerprint.pb": b"f",
}


def _zip(path: Path, entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tf.addfile(info, io.BytesIO(data) if data else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, b""


@pytest.fixture
def area(tmp_path: Path) -> tuple[Path, Path]:
    """(folder holding the archive, empty parent folder of the extraction destination)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return tmp_path / "in", tmp_path / "out"


def _refused(archive: Path, out: Path, match: str, **limits: float) -> None:
    """Both the check and the extraction refuse, and nothing appears next to the destination."""
    options = {**LIMITS, **limits}
    with pytest.raises(ArchiveError, match=match):
        check_archive(archive, **options)  # type: ignore[arg-type]
    with pytest.raises(ArchiveError, match=match):
        safe_extract(archive, out / "model", **options)  # type: ignore[arg-type]
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]


# Valid archives


@pytest.mark.parametrize("top", [None, "my_model"])
def test_zip_with_saved_model_at_root_or_in_one_folder(area: tuple[Path, Path], top: str | None) -> None:
    src, out = area
    prefix = f"{top}/" if top else ""
    archive = _zip(src / "m.zip", {prefix + k: v for k, v in MODEL_FILES.items()})
    info = check_archive(archive, **LIMITS)  # type: ignore[arg-type]
    assert info.entries == 3
    assert info.expanded_bytes == sum(len(v) for v in MODEL_FILES.values())
    assert info.root == PurePosixPath(top or ".")
    root = safe_extract(archive, out / "model", **LIMITS)  # type: ignore[arg-type]
    assert root == out / "model" / (top or ".")
    assert (root / "variables" / "variables.index").read_bytes() == MODEL_FILES["variables/variables.index"]
    assert [p.name for p in out.iterdir()] == ["model"]  # the staging folder is gone
    assert detect_model_format(archive) == "saved_model"


def test_tgz_with_saved_model_in_one_folder(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(src / "m.tgz", [_file(f"export/{k}", v) for k, v in MODEL_FILES.items()])
    assert check_archive(archive, **LIMITS).root == PurePosixPath("export")  # type: ignore[arg-type]
    root = safe_extract(archive, out / "model", **LIMITS)  # type: ignore[arg-type]
    assert root == out / "model" / "export"
    assert (root / "fingerprint.pb").read_bytes() == b"f"


@pytest.mark.parametrize("mode", ["w:gz", "w", "w:bz2", "w:xz"])
def test_tar_with_dot_prefixed_names(area: tuple[Path, Path], mode: str) -> None:
    src, out = area
    dot = tarfile.TarInfo(".")
    dot.type = tarfile.DIRTYPE
    archive = _tar(src / "m.tar", [(dot, b"")] + [_file(f"./{k}", v) for k, v in MODEL_FILES.items()], mode)
    assert check_archive(archive, **LIMITS).root == PurePosixPath(".")  # type: ignore[arg-type]
    root = safe_extract(archive, out / "model", **LIMITS)  # type: ignore[arg-type]
    assert (root / "saved_model.pb").read_bytes() == MODEL_FILES["saved_model.pb"]
    assert detect_model_format(archive) == "saved_model"


def test_existing_complete_extraction_is_reused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {f"m/{k}": v for k, v in MODEL_FILES.items()})
    first = safe_extract(archive, out / "model", **LIMITS)  # type: ignore[arg-type]
    (first / "marker").write_text("kept")
    second = safe_extract(archive, out / "model", **LIMITS)  # type: ignore[arg-type]
    assert second == first and (second / "marker").read_text() == "kept"
    assert [p.name for p in out.iterdir()] == ["model"]


def test_defaults_come_from_settings(area: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import get_settings

    src, _ = area
    archive = _zip(src / "m.zip", MODEL_FILES)
    assert check_archive(archive).entries == 3
    monkeypatch.setenv("PARRY_MAX_ARCHIVE_ENTRIES", "2")
    get_settings.cache_clear()
    try:
        with pytest.raises(ArchiveError, match="more than 2 entries"):
            check_archive(archive)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


# Hostile archives


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..\\x"])
def test_zip_slip_is_refused(area: tuple[Path, Path], name: str) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {**MODEL_FILES, name: b"evil"})
    _refused(archive, out, "contains '..'")


def test_tar_slip_is_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(src / "m.tgz", [_file("saved_model.pb"), _file("../x", b"evil")])
    _refused(archive, out, "contains '..'")


@pytest.mark.parametrize("name", ["/etc/evil", "C:/evil", "\\evil"])
def test_absolute_paths_are_refused(area: tuple[Path, Path], name: str) -> None:
    src, out = area
    _refused(_zip(src / "m.zip", {**MODEL_FILES, name: b"evil"}), out, "absolute path")


def test_absolute_path_in_tar_is_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    _refused(_tar(src / "m.tgz", [_file("saved_model.pb"), _file("/tmp/evil")]), out, "absolute path")


def test_symlink_in_tar_is_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(src / "m.tgz", [_file("saved_model.pb"), _special("variables", tarfile.SYMTYPE, "/etc")])
    _refused(archive, out, "'variables' is a link")


def test_hardlink_in_tar_is_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(
        src / "m.tgz", [_file("saved_model.pb"), _special("copy", tarfile.LNKTYPE, "saved_model.pb")]
    )
    _refused(archive, out, "'copy' is a link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_entries_are_refused(area: tuple[Path, Path], kind: bytes) -> None:
    src, out = area
    archive = _tar(src / "m.tgz", [_file("saved_model.pb"), _special("dev", kind)])
    _refused(archive, out, "'dev' is a device, fifo or other special file")


def test_symlink_in_zip_is_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = src / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("saved_model.pb", b"g")
        link = zipfile.ZipInfo("variables")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc")
    _refused(archive, out, "'variables' is a symbolic link")


def test_too_many_entries(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {**MODEL_FILES, **{f"assets/{i}": b"a" for i in range(10)}})
    _refused(archive, out, "more than 5 entries", max_entries=5)


def test_too_many_entries_in_tar(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(src / "m.tgz", [_file("saved_model.pb")] + [_file(f"a/{i}") for i in range(10)])
    _refused(archive, out, "more than 5 entries", max_entries=5)


def test_declared_size_over_the_limit(area: tuple[Path, Path]) -> None:
    src, out = area
    # Stored, so the ratio is 1: only the size limit can refuse it.
    archive = _zip(
        src / "m.zip", {**MODEL_FILES, "big": bytes(range(256)) * 8192}, compression=zipfile.ZIP_STORED
    )
    _refused(archive, out, "beyond the 1000000 bytes allowed", max_expanded_bytes=1_000_000)


def test_declared_size_over_the_limit_in_tar(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(src / "m.tar", [_file("saved_model.pb"), _file("big", b"\x01" * 2_000_000)], "w")
    _refused(archive, out, "beyond the 1000000 bytes allowed.*'big'", max_expanded_bytes=1_000_000)


def _zeros_zip(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("saved_model.pb", b"g")
        with zf.open("variables/variables.data-00000-of-00001", "w") as f:
            for _ in range(size // (1 << 20)):
                f.write(bytes(1 << 20))
    return path


def test_ratio_bomb_zip(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zeros_zip(src / "bomb.zip", 50 * 1024 * 1024)
    assert archive.stat().st_size < 200_000
    _refused(archive, out, "more than 200 times its size", max_expanded_bytes=10**12)


def test_ratio_bomb_tgz(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = src / "bomb.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.addfile(tarfile.TarInfo("saved_model.pb"))
        info = tarfile.TarInfo("zeros")
        info.size = 50 * 1024 * 1024
        tf.addfile(info, _Zeros(info.size))
    _refused(archive, out, "more than 200 times its size.*'zeros'", max_expanded_bytes=10**12)


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_entry_larger_than_declared_is_refused(area: tuple[Path, Path]) -> None:
    """A zip whose central directory understates an entry's size: the real bytes are what counts."""
    src, out = area
    archive = _zip(src / "m.zip", {"saved_model.pb": b"g", "w": b"A" * 5000}, compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last central record is "w"'s; uncompressed size at +24
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    _refused(archive, out, "'w' is truncated or corrupt")


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_zip(area: tuple[Path, Path], cut: float) -> None:
    src, out = area
    data = _zip(src / "full.zip", {**MODEL_FILES, "w": bytes(range(256)) * 100}).read_bytes()
    (src / "full.zip").unlink()
    archive = src / "m.zip"
    archive.write_bytes(data[: int(len(data) * cut)])
    _refused(archive, out, "truncated or corrupt")


def test_truncated_tgz_names_the_entry(area: tuple[Path, Path]) -> None:
    src, out = area
    payload = random.Random(0).randbytes(200_000)
    data = _tar(src / "full.tgz", [_file("saved_model.pb"), _file("variables/data", payload)]).read_bytes()
    (src / "full.tgz").unlink()
    archive = src / "m.tgz"
    archive.write_bytes(data[: len(data) // 2])
    _refused(archive, out, "truncated or corrupt.*'variables/data'")


def test_duplicate_entries_are_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _tar(src / "m.tgz", [_file("saved_model.pb"), _file("a", b"1"), _file("./a", b"2")])
    _refused(archive, out, "'./a' appears more than once")


def test_archive_without_saved_model_cannot_be_extracted(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {"config.json": b"{}", "model.weights.h5": b""})  # a .keras file
    assert check_archive(archive, **LIMITS).root is None  # type: ignore[arg-type]
    with pytest.raises(ArchiveError, match="holds no saved_model.pb"):
        safe_extract(archive, out / "model", **LIMITS)  # type: ignore[arg-type]
    assert list(out.iterdir()) == []


def test_saved_model_nested_too_deep_is_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {"deep/er/saved_model.pb": b"g"})
    _refused(archive, out, "No saved_model.pb was found at the archive root or inside one top folder")


def test_two_saved_models_are_refused(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {"a/saved_model.pb": b"g", "b/saved_model.pb": b"g"})
    _refused(archive, out, r"several SavedModels \(a, b\)")


# Format detection


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100)), "h5"),
        (lambda p: _zip(p, {"config.json": b"{}", "model.weights.h5": b"", "metadata.json": b"{}"}), "keras"),
        (lambda p: _zip(p, {"m/saved_model.pb": b"g", "m/config.json": b"{}"}), "saved_model"),
        (lambda p: _tar(p, [_file("m/saved_model.pb")]), "saved_model"),
    ],
)
def test_format_is_detected_by_content(tmp_path: Path, make: Callable[[Path], object], expected: str) -> None:
    path = tmp_path / "0123abcd"  # stored under its digest: no extension to go by
    make(path)
    assert detect_model_format(path) == expected


def test_saved_model_directory_is_detected(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "saved_model.pb").write_bytes(b"g")
    assert detect_model_format(tmp_path) == "saved_model"


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world", bytes(range(256)) * 10, b"PK\x03\x04" + bytes(50), b"\x1f\x8b" + bytes(50)],
)
def test_other_content_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blob"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match="not a SavedModel archive|truncated or corrupt"):
        detect_model_format(path)


def test_tar_without_saved_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="holds no saved_model.pb"):
        detect_model_format(_tar(tmp_path / "t", [_file("readme.txt")]))


def test_module_imports_no_numpy_or_tensorflow() -> None:
    code = "import sys, service.vetting.archives; sys.exit(bool({'numpy', 'tensorflow'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_small_compressible_archive_is_not_a_bomb(area: tuple[Path, Path]) -> None:
    src, out = area
    archive = _zip(src / "m.zip", {"saved_model.pb": bytes(500_000)})
    assert archive.stat().st_size * 200 < 500_000  # over the ratio, but far too small to harm
    assert safe_extract(archive, out / "model", **LIMITS).joinpath("saved_model.pb").stat().st_size == 500_000  # type: ignore[arg-type]
