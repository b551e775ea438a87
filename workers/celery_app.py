"""The Celery app of the workers: configuration from Settings, logging, and the reconciler thread.

Start a worker with `parry worker` or
`celery -A workers.celery_app worker --pool=solo -Q parry -l info`
(pool solo: TensorFlow and fork do not mix, and one process per CPU slice or GPU is the unit anyway).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from service.domain.tasks import celery_config
from service.settings import get_settings

app = Celery("parry", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(loglevel: int | str | None = None, logfile: str | None = None, **_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging itself; ours names the module.
    level = loglevel if loglevel is not None else logging.INFO
    handler: logging.Handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _apply_limits(**_: Any) -> None:
    # The worker's own limits, a ceiling for its model processes (workers/runtime/limits.py).
    from workers.runtime.limits import apply_limits

    apply_limits(get_settings())


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _end_children(**_: Any) -> None:
    from workers.context import build_context

    build_context().children.close()


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _sweep_leftovers(**_: Any) -> None:
    from workers.runtime.leftovers import sweep

    sweep(get_settings().data_dir)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reconciler(**_: Any) -> None:
    from workers.context import build_context
    from workers.runtime.reconciler import start_reconciler

    start_reconciler(build_context())


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _hand_back_running_job(**_: Any) -> None:
    # A warm shutdown would wait for the running job to end (hours): it stops and goes back to the queue.
    from workers.runtime.heartbeat import SHUTTING_DOWN

    SHUTTING_DOWN.set()
