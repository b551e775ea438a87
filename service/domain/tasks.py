"""What the API and the workers must agree on about Celery: task names and configuration.

No Celery app is built here and nothing imports `workers`: the API sends tasks by name.
"""

from __future__ import annotations

from typing import Any

from service.settings import Settings

VALIDATE_MODEL = "parry.validate_model"
RUN_EVALUATION = "parry.run_evaluation"
# One shard of a sharded evaluation; its argument is "<job id>:<shard index>" (workers/runners/sharded.py).
RUN_EVALUATION_SHARD = "parry.run_evaluation_shard"
RUN_TRAINING = "parry.run_training"
RUN_HARD_SET = "parry.run_hard_set"
DELIVER_CALLBACK = "parry.deliver_callback"

QUEUE = "parry"


def broker_url(settings: Settings) -> str:
    """The Redis URL; `parry serve` exports PARRY_REDIS_URL to its children when it starts a bundled Redis."""
    if not settings.redis_url:
        raise RuntimeError(
            "PARRY_REDIS_URL is not set: run `parry serve` (which starts a bundled Redis) "
            "or point PARRY_REDIS_URL at a Redis server"
        )
    return settings.redis_url


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the sending (API) and the consuming (worker) side."""
    return {
        "broker_url": broker_url(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Longer than the longest job, so Redis does not redeliver a job that is still running.
        "broker_transport_options": {"visibility_timeout": settings.task_time_limit_s + 3600},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
