"""Device pinning of a worker: `parry worker --gpu N` sets CUDA_VISIBLE_DEVICES; without a GPU, the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.cli import server as serve
from service.cli.main import main
from service.settings import Settings


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], dict[str, str]]]:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def fake_exec(file: str, args: list[str], env: dict[str, str]) -> None:
        calls.append((file, args, env))

    monkeypatch.setattr(serve.os, "execvpe", fake_exec)
    return calls


def test_worker_gpu_pins_one_device_before_tensorflow_starts(
    tmp_path: Path, exec_calls: list[tuple[str, list[str], dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    serve.worker(settings=settings)
    serve.worker(gpu="1", settings=settings)
    assert "CUDA_VISIBLE_DEVICES" not in exec_calls[0][2]  # no --gpu: the environment as it is
    assert exec_calls[1][2]["CUDA_VISIBLE_DEVICES"] == "1"
    assert exec_calls[1][1][:4] == exec_calls[0][1][:4]  # the same celery worker command
    with pytest.raises(serve.ServeError, match="one GPU index"):
        serve.worker(gpu="0,1", settings=settings)


def test_the_cli_passes_gpu_through(
    tmp_path: Path, exec_calls: list[tuple[str, list[str], dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARRY_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("PARRY_DATA_DIR", str(tmp_path))
    serve.get_settings.cache_clear()
    try:
        main(["worker", "--gpu", "0"])
    finally:
        serve.get_settings.cache_clear()
    assert exec_calls[-1][2]["CUDA_VISIBLE_DEVICES"] == "0"


def test_configure_devices_on_a_machine_without_gpu_changes_nothing() -> None:
    import tensorflow as tf

    from workers.runtime.devices import configure_devices

    names = configure_devices()
    assert names == [d.name for d in tf.config.list_physical_devices("GPU")]
    assert tf.config.list_logical_devices("CPU")  # the worker still has its CPU
