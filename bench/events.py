"""Live job events: how long a change of a job takes to reach the clients listening to its SSE stream.

Starts the API (uvicorn, its own process) on a fresh data directory, opens `--listeners` streams of
`GET /v1/jobs/{id}/events` on one job (or spread over `--jobs` jobs), then acts as a worker would from this
process: it claims the job and writes `--changes` progress reports, `--interval-s` apart, to the database.
Each latency is from the moment a change has committed to the moment a listener has read its event, over
every (change, listener) pair. The API hears of another process's commits through the job change feed
(polled every 20 ms), as it does a real worker's. No broker and no worker are needed. Prints figures; never
passes or fails on time.

    python bench/events.py [--listeners 32] [--changes 200] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.domain.results import Progress  # noqa: E402
from service.store.jobs import JobStore  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _listen(base: str, job_id: str, seen: dict[int, float], ready: asyncio.Event) -> None:
    """Read one stream until its `end`, noting when each change number (`n=K` in the stage) arrived."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(120.0)) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events") as response,
    ):
        response.raise_for_status()
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                now = time.monotonic()
                data = json.loads(line[6:])
                ready.set()
                progress = data.get("progress") or {}
                stage = str(progress.get("stage", ""))
                if stage.startswith("n="):
                    seen.setdefault(int(stage[2:]), now)
                if name == "end":
                    return


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="parry-bench-events-"))
    url = args.database_url or f"sqlite:///{data_dir / 'parry.db'}"
    store = JobStore(url)
    store.create_schema()
    port = _free_port()
    env = {
        **os.environ,
        "PARRY_DATA_DIR": str(data_dir),
        "PARRY_DATABASE_URL": url,
        "PARRY_REDIS_URL": "redis://127.0.0.1:1/0",  # unused: jobs are written to the store directly
    }
    log = (data_dir / "api.log").open("wb")
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.api.main:create_app"]
    api = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"], env=env, stdout=log, stderr=log, cwd=ROOT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        jobs = [store.create_job(owner="local", kind="evaluation", spec={})[0].id for _ in range(args.jobs)]
        for job_id in jobs:
            assert store.claim(job_id, worker="bench", lease_seconds=3600) is not None
        seen: list[dict[int, float]] = [{} for _ in range(args.listeners)]
        readies = [asyncio.Event() for _ in range(args.listeners)]
        tasks = [
            asyncio.create_task(_listen(base, jobs[i % len(jobs)], seen[i], readies[i]))
            for i in range(args.listeners)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        sent: dict[int, float] = {}
        started = time.monotonic()
        for n in range(args.changes):
            job_id = jobs[n % len(jobs)]
            progress = Progress(fraction=(n + 1) / (args.changes + 1), stage=f"n={n}")
            await asyncio.to_thread(
                store.report_progress, job_id, worker="bench", progress=progress, lease_seconds=3600
            )
            sent[n] = time.monotonic()
            await asyncio.sleep(args.interval_s)
        for job_id in jobs:
            store.finish(job_id, worker="bench", status="succeeded", result={})
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed = time.monotonic() - started
    finally:
        api.terminate()
        api.wait(timeout=20)
        log.close()
        store.dispose()
    latencies: list[float] = []
    missed = 0
    for i in range(args.listeners):
        job_index = i % len(jobs)
        for n, at in sent.items():
            if n % len(jobs) != job_index:
                continue
            if n in seen[i]:
                latencies.append((seen[i][n] - at) * 1000)
            else:
                missed += 1  # two changes read as one: the stream sends the latest state
    apart = f"{args.interval_s * 1000:.0f} ms apart"
    print(  # noqa: T201
        f"{args.listeners} listeners on {args.jobs} job(s), {args.changes} changes {apart}, "
        f"{store.engine.dialect.name}; {len(latencies)} deliveries in {elapsed:.1f} s, {missed} coalesced"
    )
    print(  # noqa: T201
        "change committed -> event read (ms): "
        + ", ".join(f"p{int(q * 100)} {_percentile(latencies, q):.1f}" for q in (0.5, 0.9, 0.95, 0.99))
        + f", max {max(latencies, default=float('nan')):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=1, help="spread the listeners over this many jobs")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--interval-s", type=float, default=0.1)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a fresh data directory")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
