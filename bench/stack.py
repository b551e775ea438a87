"""A private Parry stack for the benchmarks: redis-server, the API (uvicorn) and Celery workers on loopback.

Everything lives in one temporary directory (the data dir, the logs) and stops when the `stack()` block
ends. The store is SQLite in the data dir unless a database URL is given. Keys, a database URL and the
like from the caller's environment are dropped, so a benchmark always measures the same configuration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 120) -> T:
    """The first truthy value of `check()`, polled every 50 ms; RuntimeError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = check()
            if value:
                return value
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")


class Stack:
    """Redis, the API and a changing set of workers, all on loopback in one data dir."""

    def __init__(self, work: Path, database_url: str | None = None) -> None:
        self.work = work
        self.redis_port, self.api_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {
            **os.environ,
            "PARRY_DATA_DIR": str(work / "data"),
            "PARRY_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("PARRY_DATABASE_URL", "PARRY_API_KEYS", "PARRY_API_KEYS_FILE"):
            self.env.pop(name, None)
        if database_url:
            self.env["PARRY_DATABASE_URL"] = database_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=600)

    def _start(
        self, command: list[str], log: str, env: dict[str, str], core: int | None = None
    ) -> subprocess.Popen[bytes]:
        out = (self.work / log).open("ab")
        pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin
        )
        self.procs.append(proc)
        return proc

    def start_redis(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed")
        command = [
            server,
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self._start(command, "redis.log", self.env)

    def start_api(self) -> None:
        """The API, one uvicorn process without access log; returns once `/readyz` answers 200."""
        command = [
            sys.executable, "-m", "uvicorn", "service.api.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.api_port), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        self.api = self._start(command, "api.log", self.env)
        wait_until(lambda: self.client.get("/readyz").status_code == 200, "the API answering /readyz")

    def start(self) -> None:
        self.start_redis()
        self.start_api()

    def start_workers(self, cores: Sequence[int | None], extra_env: dict[str, str] | None = None) -> None:
        """One worker (pool solo) per entry: pinned to that core with one TensorFlow thread, or unpinned."""
        for core in cores:
            env = {**self.env, **(extra_env or {})}
            if core is not None:
                env.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
            log = f"worker-{len(self.procs)}.log"
            command = [
                sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=solo",
                "-Q", "parry", "-l", "info", "-n", f"bench{len(self.procs)}@%h",
                "--without-mingle", "--without-gossip",
            ]  # fmt: skip
            self.workers.append(self._start(command, log, env, core=core))
            path = self.work / log
            wait_until(lambda path=path: "ready." in path.read_text(errors="replace"), "a worker starting")

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.terminate()
            proc.wait(timeout=60)
        self.workers.clear()

    def stop(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def upload_model(self, path: Path) -> str:
        """Upload a model file and wait until a worker has validated it; its id."""
        with path.open("rb") as fh:
            response = self.client.post("/v1/models", files={"file": (path.name, fh)})
        response.raise_for_status()
        model_id = str(response.json()["id"])

        def settled() -> str | None:
            status = str(self.client.get(f"/v1/models/{model_id}").json()["status"])
            return None if status == "validating" else status

        status = wait_until(settled, f"validation of model {model_id}")
        if status != "ready":
            raise RuntimeError(f"the benchmark model was {status}")
        return model_id

    def wait_job(self, job_id: str, timeout: float = 3600) -> dict[str, Any]:
        """The job once it has ended (succeeded, failed or cancelled)."""

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_until(ended, f"job {job_id} ending", timeout=timeout)


@contextlib.contextmanager
def stack(prefix: str, database_url: str | None = None) -> Iterator[Stack]:
    """A Stack in a fresh temporary directory, stopped and removed when the block ends; nothing is started."""
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        s = Stack(Path(work), database_url)
        try:
            yield s
        finally:
            s.stop()


def tiny_keras_model(path: Path) -> Path:
    """A tiny untrained CNN for 28x28x1 inputs: the benchmarks that time the service, not the model."""
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(path)
    return path
