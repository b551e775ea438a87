"""What a hostile or a large dataset upload costs the API process: its RSS before, at its peak and after.

Prints figures; never passes or fails. A private stack (redis-server, the API as a uvicorn subprocess,
SQLite) in a temporary data dir. The uploads:
- a deflate bomb: an `.npz` whose x expands about a thousand times (finding F4, 18.7 MB that took the API
  from 0.15 GB to a 5.39 GB peak and kept 4.34 GB after its 422);
- a header declaring a 10^6 x 10^6 float32 x over 64 bytes (finding F5, a 500 before);
- a valid 400 MB float32 dataset (accepted: checked by streaming, never loaded whole).

    python bench/datasets.py [--valid-mb 400]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import stack  # noqa: E402

MiB = 2**20


class PeakRss:
    """Samples a process's RSS every 10 ms while in the block."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def deflate_bomb(path: Path) -> Path:
    n = 4 * 1024**3  # 4 GiB of zeros, streamed into the zip
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((n // 4, 1), "<f4"))
            block = bytes(64 * MiB)
            for _ in range(n // len(block)):
                member.write(block)
        zf.writestr("y.npy", _npy(np.zeros(n // 4, np.uint8)[:10]))
    return path


def huge_header(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", _npy_header((10**6, 10**6), "<f4") + bytes(64))
        zf.writestr("y.npy", _npy(np.arange(3)))
    return path


def valid(path: Path, megabytes: int) -> Path:
    n = megabytes * MiB // (28 * 28 * 4)
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n, 28, 28, 1), dtype=np.float32), y=rng.integers(0, 10, n))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--valid-mb", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parry-bench-data-") as tmp, stack("parry-bench-datasets-") as s:
        work = Path(tmp)
        files = {
            "deflate bomb": deflate_bomb(work / "bomb.npz"),
            "10^12-element header": huge_header(work / "header.npz"),
            f"valid {args.valid_mb} MB": valid(work / "valid.npz", args.valid_mb),
        }
        s.start()
        assert s.api is not None
        proc = psutil.Process(s.api.pid)
        print(f"API RSS idle: {proc.memory_info().rss / MiB:.0f} MiB")
        columns = ("file MB", "status", "RSS before", "peak", "after", "seconds")
        print(f"{'upload':<24} " + " ".join(f"{c:>{max(len(c), 8)}}" for c in columns))
        for name, path in files.items():
            before = proc.memory_info().rss
            started = time.perf_counter()
            with PeakRss(s.api.pid) as peak, path.open("rb") as fh:
                response = s.client.post("/v1/datasets", files={"file": (path.name, fh)})
            seconds = time.perf_counter() - started
            time.sleep(0.5)
            after = proc.memory_info().rss
            print(
                f"{name:<24} {path.stat().st_size / MiB:>8.1f} {response.status_code:>6} "
                f"{before / MiB:>9.0f} M {peak.peak / MiB:>6.0f} M {after / MiB:>6.0f} M {seconds:>8.1f}"
            )
            if response.status_code >= 400:
                print(f"    {response.json()['detail']}")


if __name__ == "__main__":
    main()
