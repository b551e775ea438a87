"""The API's job cache (service/api/job_cache.py): what it keeps, what drops it, and that a committed change
reaches readers of several API processes on one database (real uvicorn processes, SQLite and PostgreSQL).

The cache answers only while its last poll began less than `bound` (0.1 s) ago, and that poll dropped
every job changed before it began: "a change is visible within 100 ms" holds by construction, and the
tests below check the states (the new status is what every process answers) with a generous timeout.
bench/service.py measures the real latency (a cancel committed by another process, seen by a reader).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.api.job_cache import JobCache
from service.domain.jobs import JobStatus
from service.store.changes import Poll
from service.store.jobs import JobStore
from tests.dbs import PostgresUnavailable, fresh_postgres_url

ROOT = Path(__file__).resolve().parents[3]
KEYS = (0, 0)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[JobCache]:
    """A cache whose poller does not run: the tests apply polls themselves."""
    store = JobStore(f"sqlite:///{tmp_path / 'parry.db'}")
    store.create_schema()
    yield JobCache(store, max_jobs=2)
    store.dispose()


def _polled(cache: JobCache, *, changed: list[str] | None = None, ago: float = 0.0) -> None:
    cache.apply(Poll(changed=changed or [], keys=KEYS), time.monotonic() - ago)


def _keep(cache: JobCache, job_id: str, key: str = "k", owner: str = "o") -> None:
    cache.fill(cache.reserve(job_id, key), owner=owner, job_owner=owner, body=job_id.encode())


def test_a_read_answers_from_the_cache_for_the_owner_only(cache: JobCache) -> None:
    _polled(cache)
    _keep(cache, "job_a")
    assert cache.lookup("job_a", "k") == b"job_a"
    assert cache.lookup("job_a", "another key") is None
    _keep(cache, "job_b", key="other", owner="someone else")
    assert cache.lookup("job_b", "k") is None and cache.lookup("job_b", "other") == b"job_b"
    assert (cache.hits, cache.misses) == (2, 2)


def test_a_change_drops_the_job_and_a_read_reserved_before_it_keeps_nothing(cache: JobCache) -> None:
    _polled(cache)
    _keep(cache, "job_a")
    _polled(cache, changed=["job_a"])
    assert cache.lookup("job_a", "k") is None
    ticket = cache.reserve("job_a", "k")  # a read on its way to the database ...
    _polled(cache, changed=["job_a"])  # ... and a change reported before it comes back
    cache.fill(ticket, owner="o", job_owner="o", body=b"old")
    assert cache.lookup("job_a", "k") is None


def test_the_cache_answers_nothing_once_its_last_poll_is_older_than_its_bound(cache: JobCache) -> None:
    assert cache.bound <= 0.1
    assert cache.lookup("job_a", "k") is None  # never polled
    _polled(cache)
    _keep(cache, "job_a")
    assert cache.lookup("job_a", "k") == b"job_a"
    _polled(cache, ago=cache.bound)
    assert not cache.fresh() and cache.lookup("job_a", "k") is None


def test_a_body_is_kept_no_longer_than_max_age(cache: JobCache) -> None:
    """A process of an older release writes no feed rows; its changes show within `max_age`."""
    _polled(cache)
    _keep(cache, "job_a")
    assert cache.lookup("job_a", "k") == b"job_a"
    cache.max_age = 0.0
    assert cache.lookup("job_a", "k") is None


def test_a_change_of_the_keys_forgets_every_owner(cache: JobCache) -> None:
    _polled(cache)
    _keep(cache, "job_a")
    ticket = cache.reserve("job_b", "k")
    cache.apply(Poll(changed=[], keys=(1, 1)), time.monotonic())  # a key added or revoked
    assert cache.lookup("job_a", "k") is None
    cache.fill(ticket, owner="o", job_owner="o", body=b"job_b")  # the owner was read before: not kept
    assert cache.lookup("job_b", "k") is None
    _keep(cache, "job_b")
    assert cache.lookup("job_b", "k") == b"job_b"


def test_the_cache_keeps_the_most_recently_read_jobs(cache: JobCache) -> None:
    _polled(cache)
    for job_id in ("job_a", "job_b"):
        _keep(cache, job_id)
    assert cache.lookup("job_a", "k") is not None  # job_b is now the least recently read
    _keep(cache, "job_c")
    assert [cache.lookup(j, "k") is not None for j in ("job_a", "job_b", "job_c")] == [True, False, True]


def test_this_process_s_own_commits_drop_the_job_at_once(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'parry.db'}")
    store.create_schema()
    cache = JobCache(store)
    job, _ = store.create_job(owner="o", kind="evaluation", spec={})
    _polled(cache)
    _keep(cache, job.id)
    store.request_cancel(job.id, owner="o")
    assert cache.lookup(job.id, "k") is None
    store.dispose()


# ---- real API processes on one database -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Seconds until `check()` held, polled every 2 ms; fails after a generous `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        assert time.monotonic() - start < timeout, f"{what} did not happen within {timeout} s"
        time.sleep(0.002)  # leave the cores to the APIs


@contextmanager
def _apis(url: str, data_dir: Path, count: int) -> Iterator[list[httpx.Client]]:
    """`count` uvicorn processes serving the API on the database at `url`, and a client for each."""
    env = {
        **os.environ,
        "PARRY_DATA_DIR": str(data_dir),
        "PARRY_DATABASE_URL": url,
        "PARRY_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there: the broker is down
    }
    for name in ("PARRY_API_KEYS", "PARRY_API_KEYS_FILE"):
        env.pop(name, None)
    procs, clients = [], []
    try:
        for _ in range(count):
            port = _free_port()
            command = [
                sys.executable, "-m", "uvicorn", "service.api.main:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
            procs.append(subprocess.Popen(command, env=env, cwd=ROOT))
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10))
        for client in clients:
            _until(lambda client=client: client.get("/healthz").status_code == 200, "an API starting", 120)
        yield clients
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _status(client: httpx.Client, job_id: str) -> str:
    response = client.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    return str(response.json()["status"])


def _hits(client: httpx.Client) -> float:
    line = next(
        x for x in client.get("/metrics").text.splitlines() if x.startswith("parry_job_cache_hits_total")
    )
    return float(line.split()[-1])


def _cached_everywhere(clients: list[httpx.Client], job_id: str, status: str) -> None:
    """Every API answers `status` for the job from its cache (its hit counter moves)."""
    for client in clients:

        def hit(client: httpx.Client = client) -> bool:
            # A scrape is slow here (the broker it asks about is down), so several reads per check.
            before = _hits(client)
            statuses = {_status(client, job_id) for _ in range(5)}
            return statuses == {status} and _hits(client) > before

        _until(hit, f"{client.base_url} answering job {job_id} from its cache")


def _freshness_across_processes(url: str, data_dir: Path) -> None:
    store = JobStore(url)
    store.create_schema()
    try:
        with _apis(url, data_dir, 2) as clients:
            # A worker's finish, committed through another process's store.
            job, _ = store.create_job(owner="local", kind="evaluation", spec={})
            assert store.claim(job.id, worker="w", lease_seconds=60) is not None
            _cached_everywhere(clients, job.id, JobStatus.RUNNING)
            assert store.finish(
                job.id, worker="w", status=JobStatus.SUCCEEDED, result={"clean_accuracy": 1.0}
            )
            for c in clients:
                _until(lambda c=c: _status(c, job.id) == JobStatus.SUCCEEDED, "the finish showing")
            # A user's cancel of a queued job.
            queued, _ = store.create_job(owner="local", kind="evaluation", spec={})
            _cached_everywhere(clients, queued.id, JobStatus.QUEUED)
            store.request_cancel(queued.id, owner="local")
            for c in clients:
                _until(lambda c=c: _status(c, queued.id) == JobStatus.CANCELLED, "the cancel showing")
            # Later reads come from the caches again, with the new status.
            _cached_everywhere(clients, job.id, JobStatus.SUCCEEDED)
            _cached_everywhere(clients, queued.id, JobStatus.CANCELLED)
    finally:
        store.dispose()


def test_a_change_reaches_every_api_process_on_sqlite(tmp_path: Path) -> None:
    _freshness_across_processes(f"sqlite:///{tmp_path / 'parry.db'}", tmp_path / "data")


def test_a_change_reaches_every_api_process_on_postgresql(tmp_path: Path) -> None:
    try:
        with fresh_postgres_url() as url:
            _freshness_across_processes(url, tmp_path / "data")
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
