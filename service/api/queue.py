"""Sending tasks to the workers by name, and looking at the broker (ping, queue depth).

The API never imports `workers`: it builds a bare Celery client from `service.domain.tasks.celery_config`
and sends task names with job ids as arguments.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from service.domain import tasks as broker
from service.settings import Settings

log = logging.getLogger(__name__)


class Enqueuer(Protocol):
    def send(self, task_name: str, args: list[str]) -> None: ...


class CeleryEnqueuer:
    """Sends tasks through a Celery client built on first use (so the API starts without a broker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        with self._lock:
            if self._app is None:
                from celery import Celery  # a second of imports, paid on the first submission only

                config = dict(broker.celery_config(self.settings))
                # A request must not hang on a dead broker: fail fast, the reconciler re-sends queued jobs.
                config["broker_connection_timeout"] = 2.0
                config["broker_connection_retry"] = False
                config["broker_connection_max_retries"] = 1
                config["task_publish_retry_policy"] = {
                    "max_retries": 1,
                    "interval_start": 0,
                    "interval_step": 0.2,
                    "interval_max": 0.2,
                }
                app = Celery("parry-api", set_as_current=False)
                app.conf.update(config)
                self._app = app
            return self._app

    def send(self, task_name: str, args: list[str]) -> None:
        self._client().send_task(task_name, args=args, queue=broker.QUEUE)

    def close(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None


def send_logged(enqueuer: Enqueuer, task_name: str, args: list[str]) -> bool:
    """Send a task; when the broker is down, log it and go on (the job stays queued in the store)."""
    try:
        enqueuer.send(task_name, args)
    except Exception as exc:  # any broker failure leaves the job to the reconciler
        log.warning(
            "could not enqueue %s %s (%s: %s); it stays queued for the reconciler",
            task_name,
            args,
            type(exc).__name__,
            exc,
        )
        return False
    log.info("enqueued %s %s", task_name, args)
    return True


def redis_client(redis_url: str, *, timeout: float = 1.0) -> redis.Redis:
    """A Redis client for `redis://`, `rediss://`, `unix://` and kombu's `redis+socket:///path` URLs."""
    parts = urlsplit(redis_url)
    if parts.scheme == "redis+socket":
        query = parse_qs(parts.query)
        db = int(query.get("virtual_host", query.get("db", ["0"]))[0] or 0)
        return redis.Redis(
            unix_socket_path=unquote(parts.path),
            db=db,
            password=unquote(parts.password) if parts.password else None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    return redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


class BrokerProbe:
    """Ping and queue depth of the Redis broker, for /readyz and /metrics."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self._client: redis.Redis | None = redis_client(redis_url) if redis_url else None

    def _require(self) -> redis.Redis:
        if self._client is None:
            raise ConnectionError("PARRY_REDIS_URL is not set")
        return self._client

    def ping(self) -> None:
        self._require().ping()

    def queue_depth(self) -> int:
        return int(self._require().llen(broker.QUEUE))  # kombu keeps a queue as a Redis list of that name

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
