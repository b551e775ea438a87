"""End-to-end harness: a real Redis, a real `celery worker` subprocess and the API as a uvicorn subprocess.

The service fixture is parametrized over SQLite and PostgreSQL. Redis is a private `redis-server` on a
free port (so parallel test runs never share a queue), or the one at PARRY_E2E_REDIS_URL when set.
Processes log to files under the test's data dir; their tails are printed when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from tests.dbs import PostgresUnavailable, fresh_postgres_url

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"succeeded", "failed", "cancelled"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)
            callspec = getattr(item, "callspec", None)
            on_sqlite = callspec is not None and callspec.params.get("service") == "sqlite"
            if on_sqlite and item.get_closest_marker("postgres_only"):
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path.name}: no output)"
    text = path.read_text(errors="replace").splitlines()
    return f"---- {path.name} (last {lines} lines) ----\n" + "\n".join(text[-lines:])


class RedisServer:
    """A private redis-server without persistence, which a test may stop and start again on its port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        command = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        no_persistence = ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*command, *no_persistence], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """Ours (restartable), or None when PARRY_E2E_REDIS_URL names one to use instead."""
    if os.environ.get("PARRY_E2E_REDIS_URL"):
        yield None
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary and PARRY_E2E_REDIS_URL is not set")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return redis_server.url if redis_server is not None else os.environ["PARRY_E2E_REDIS_URL"]


@dataclass
class Service:
    """The running service of one test session; methods start, stop and kill its processes."""

    env: dict[str, str]
    data_dir: Path
    port: int
    worker: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    worker_count: int = 0
    logs: list[Path] = field(default_factory=list)
    # Every worker started, for tests that run several at once; `worker` is the latest.
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    # ---- processes ------------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        path = self.data_dir / "logs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.logs.append(path)
        return path

    def start_worker(self, *, wait: bool = True) -> subprocess.Popen[bytes]:
        self.worker_count += 1
        log = self._log(f"worker-{self.worker_count}.log")
        command = [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--pool=solo",
            "-Q", "parry", "-l", "info", "-n", f"e2e{self.worker_count}-{os.getpid()}@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with log.open("ab") as out:
            self.worker = subprocess.Popen(
                command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.workers.append(self.worker)
        if wait:
            # Importing TensorFlow alone took 80-94 s on this machine under a load of 9 to 11.
            deadline = time.monotonic() + 300
            while "ready." not in log.read_text(errors="replace"):
                if self.worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start\n{tail(log)}")
                time.sleep(0.1)
        return self.worker

    def kill_worker(self, sig: int = signal.SIGKILL) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(sig)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None

    def start_api(self) -> subprocess.Popen[bytes]:
        log = self._log("api.log")
        command = [
            sys.executable, "-m", "uvicorn", "service.api.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
        ]  # fmt: skip
        with log.open("ab") as out:
            self.api = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return self.api
            if self.api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become ready\n{tail(log)}")
            time.sleep(0.1)

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()
        self.api = None

    def start_workers(self, count: int) -> list[subprocess.Popen[bytes]]:
        """Start `count` more workers, each its own process sharing the data directory, and wait for all."""
        started = [self.start_worker(wait=False) for _ in range(count)]
        logs = self.logs[-count:]
        deadline = time.monotonic() + 120
        for proc, log in zip(started, logs, strict=True):
            while "ready." not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start\n{tail(log)}")
                time.sleep(0.1)
        return started

    def stop(self) -> None:
        self.stop_api()
        self.kill_worker(signal.SIGTERM)
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def log_tails(self) -> str:
        return "\n".join(tail(path) for path in dict.fromkeys(self.logs))

    # ---- API helpers ----------------------------------------------------------------------

    def upload_model(
        self, path: Path, *, name: str | None = None, output: str | None = None
    ) -> httpx.Response:
        data = {k: v for k, v in {"name": name, "output": output}.items() if v is not None}
        with self.client() as client, path.open("rb") as fh:
            return client.post("/v1/models", files={"file": (path.name, fh)}, data=data)

    def upload_dataset(self, path: Path) -> httpx.Response:
        with self.client() as client, path.open("rb") as fh:
            return client.post("/v1/datasets", files={"file": (path.name, fh)})

    def wait_model(self, model_id: str, timeout: float = 120) -> dict[str, Any]:
        return self._wait(f"/v1/models/{model_id}", {"ready", "rejected"}, timeout)

    def wait_job(self, job_id: str, statuses: set[str] | None = None, timeout: float = 180) -> dict[str, Any]:
        return self._wait(f"/v1/jobs/{job_id}", statuses or TERMINAL, timeout)

    def _wait(self, path: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        with self.client() as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):  # the API may be restarting
                    response = client.get(path)
                    response.raise_for_status()
                    body = response.json()
                    if body["status"] in statuses:
                        return body
                time.sleep(0.2)
        raise AssertionError(f"{path} did not reach {sorted(statuses)} in {timeout} s; last: {body}")

    def submit(self, spec: dict[str, Any], *, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        with self.client() as client:
            return client.post("/v1/evaluations", json=spec, headers=headers)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with contextlib.ExitStack() as stack:
        database_url = ""
        if request.param == "postgres":
            try:
                database_url = stack.enter_context(fresh_postgres_url())
            except PostgresUnavailable as exc:
                pytest.skip(str(exc))
        data_dir = tmp_path_factory.mktemp(f"parry-{request.param}")
        _flush(redis_url)
        env = {
            **os.environ,
            "PARRY_DATA_DIR": str(data_dir),
            "PARRY_REDIS_URL": redis_url,
            # Short leases and a fast reconciler, so a killed worker's job is taken over in seconds.
            "PARRY_JOB_LEASE_S": "4",
            "PARRY_RECONCILE_INTERVAL_S": "1",
            # Queued jobs whose message the broker lost are sent again after this long.
            "PARRY_REQUEUE_QUEUED_AFTER_S": "5",
            # The callback test's receiver listens on loopback, which callbacks may not reach by default.
            "PARRY_CALLBACK_ALLOW_PRIVATE": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PARRY_DATABASE_URL", None)
        if database_url:
            env["PARRY_DATABASE_URL"] = database_url
        svc = Service(env=env, data_dir=data_dir, port=free_port())
        stack.callback(svc.stop)
        try:
            svc.start_api()
            svc.start_worker()
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{svc.log_tails()}")
        yield svc


# For tests whose subject is the computation, not the storage: they run against SQLite only, since
# what differs between the databases is covered by the tests that run on both and by tests/unit/store.
# (The value is SQLite, the fixture's first param, so pytest keeps grouping tests by database.)
one_database = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
# For a test whose SQLite twin runs elsewhere (test_faults.py): its SQLite variant is deselected. A
# parametrize of ["postgres"] would share SQLite's param index and make pytest restart the service.
postgres_only = pytest.mark.postgres_only


def _flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        svc = getattr(item, "funcargs", {}).get("service")
        if isinstance(svc, Service):
            report.sections.append(("service logs", svc.log_tails()))
    return report


# ---- data ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def e2e_files(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], mnist_test: ArrayDataset
) -> dict[str, Path]:
    """The trained CNN in every upload format (`model_files`) and 200 test samples as an .npz (`dataset`)."""
    data_path = tmp_path_factory.mktemp("e2e-data") / "mnist200.npz"
    np.savez(data_path, x=mnist_test.x[:200], y=mnist_test.y[:200])
    return {**model_files, "dataset": data_path}
