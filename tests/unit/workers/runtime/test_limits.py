"""Worker basics: its own resource limits, JSON-only messages, no credential in its environment."""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.serialization import dumps, loads, prepare_accept_content

from service.domain.tasks import celery_config
from service.settings import Settings

DEAD_REDIS = "redis://127.0.0.1:1/0"
ROOT = Path(__file__).resolve().parents[4]


def test_limits_are_applied_and_cannot_be_raised_again() -> None:
    # In a child process: lowered hard limits are for good, and the test process must keep its own.
    code = """
import json, resource
from service.settings import Settings
from workers.runtime.limits import apply_limits
limits = apply_limits(Settings(worker_max_open_files=64, worker_memory_limit_bytes=3 * 2**30))
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    raised = True
except (ValueError, OSError):
    raised = False
opened = []
try:
    for _ in range(100):
        opened.append(open("/dev/null"))
    too_many = False
except OSError:
    too_many = True
print(json.dumps({"limits": limits, "raised": raised, "too_many": too_many}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["limits"] == {"RLIMIT_CORE": 0, "RLIMIT_NOFILE": 64, "RLIMIT_DATA": 3 * 2**30}
    assert result["raised"] is False, "the model's code could raise the open-file limit back"
    assert result["too_many"] is True
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] != 64  # the test process is untouched


def test_the_worker_accepts_json_messages_only() -> None:
    config = celery_config(Settings(redis_url=DEAD_REDIS))
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    accept = prepare_accept_content(config["accept_content"])  # names to MIME types, as Celery does
    content_type, encoding, body = dumps({"args": ["job_1"]}, serializer="json")
    assert loads(body, content_type, encoding, accept=accept) == {"args": ["job_1"]}

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pickle ran code",))

    payload = pickle.dumps(Boom())
    # What kombu does with a delivered message's body before Celery sees it: a pickle is refused unread.
    with pytest.raises(ContentDisallowed):
        loads(payload, "application/x-python-serialize", "binary", accept=accept)


def test_the_celery_app_of_the_workers_uses_that_config() -> None:
    code = (
        "from workers.celery_app import app; print(sorted(app.conf.accept_content), app.conf.task_serializer)"
    )
    env = {
        **os.environ,
        "PARRY_REDIS_URL": DEAD_REDIS,
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["['json']", "json"]


SECRET_DB = "postgresql+psycopg://parry:s3cret-db@127.0.0.1:1/parry"
SECRET_REDIS = "redis://:s3cret-redis@127.0.0.1:1/0"


def test_worker_env_keeps_the_allowlist_and_moves_urls_into_private_files(tmp_path: Path) -> None:
    from service.cli.server import worker_env

    env = {
        "PATH": "/usr/bin", "HOME": "/home/p", "LC_ALL": "C.UTF-8", "TF_NUM_INTRAOP_THREADS": "1",
        "PARRY_DATA_DIR": "/data", "PARRY_DATABASE_URL": SECRET_DB, "PARRY_REDIS_URL": SECRET_REDIS,
        "PARRY_API_KEYS": "key1", "PARRY_API_KEYS_FILE": "/keys", "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "gh", "SSH_AUTH_SOCK": "/tmp/agent",
    }  # fmt: skip
    scrubbed = worker_env(env, tmp_path / "run")
    assert set(scrubbed) == {
        "PATH", "HOME", "LC_ALL", "TF_NUM_INTRAOP_THREADS", "PARRY_DATA_DIR",
        "PARRY_DATABASE_URL_FILE", "PARRY_REDIS_URL_FILE",
    }  # fmt: skip
    for name, secret in (("PARRY_DATABASE_URL_FILE", SECRET_DB), ("PARRY_REDIS_URL_FILE", SECRET_REDIS)):
        path = Path(scrubbed[name])
        assert path.read_text() == secret and path.stat().st_mode & 0o777 == 0o600
    settings = Settings(
        database_url_file=Path(scrubbed["PARRY_DATABASE_URL_FILE"]),
        redis_url_file=Path(scrubbed["PARRY_REDIS_URL_FILE"]),
    )
    assert (settings.database_url, settings.redis_url) == (SECRET_DB, SECRET_REDIS)


def test_a_started_worker_has_no_credential_in_its_environment(tmp_path: Path) -> None:
    # `parry worker` replaces itself with Celery; the broker is down, so the worker waits for it, alive.
    env = {**os.environ, "PARRY_DATA_DIR": str(tmp_path / "data"), "PARRY_DATABASE_URL": SECRET_DB,
           "PARRY_REDIS_URL": SECRET_REDIS, "PARRY_API_KEYS": "s3cret-key", "SOME_TOKEN": "s3cret-token",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"celery" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # until the exec
            assert proc.poll() is None and time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert b"s3cret" not in environ
        names = {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0") if item}
        assert {"PARRY_DATABASE_URL_FILE", "PARRY_REDIS_URL_FILE", "PARRY_DATA_DIR"} <= names
        assert not names & {"PARRY_DATABASE_URL", "PARRY_REDIS_URL", "PARRY_API_KEYS", "SOME_TOKEN"}
    finally:
        proc.kill()
        proc.wait()
