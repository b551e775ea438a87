"""`parry hard-set` against a stand-in server (httpx.MockTransport): what it sends and what it prints."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.cli.client import ParryClient
from service.cli.main import main

RESULT = {
    "dataset_id": "dst_hard",
    "kept": 12,
    "pool_size": 359,
    "min_confidence": 0.8,
    "per_surrogate": [
        {"model_id": "mdl_a", "model_sha256": "a", "accuracy": 0.9, "misclassified_confident": 20},
        {"model_id": "mdl_b", "model_sha256": "b", "accuracy": 0.85, "misclassified_confident": 30},
    ],
    "per_class_kept": {"0": 12},
    "pool_dataset_sha256": "p",
}


def _serve(monkeypatch: pytest.MonkeyPatch, result: dict[str, Any]) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json={"id": "job_h", "kind": "hard_set", "status": "queued"})
        return httpx.Response(
            200, json={"id": "job_h", "kind": "hard_set", "status": "succeeded", "result": result}
        )

    def from_env(server_url: str | None = None, api_key: str | None = None, **kwargs: Any) -> ParryClient:
        return ParryClient("http://parry.test", transport=httpx.MockTransport(server), **kwargs)

    monkeypatch.setattr(ParryClient, "from_env", staticmethod(from_env))
    monkeypatch.setattr(ParryClient, "follow_job", lambda self, job_id, timeout=None: iter(()))
    return seen


def test_hard_set_sends_the_spec_and_prints_the_job_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _serve(monkeypatch, RESULT)
    argv = ["hard-set", "--pool", "builtin:digits:test", "--surrogate", "mdl_a", "--surrogate", "mdl_b",
            "--min-confidence", "0.8"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "job_h"
    (request,) = seen
    body = json.loads(request.content)
    assert request.url.path == "/v1/hard-sets" and request.headers["Idempotency-Key"].startswith("parry-")
    assert body["pool_dataset_id"] == "builtin:digits:test" and body["surrogate_model_ids"] == [
        "mdl_a",
        "mdl_b",
    ]
    assert body["min_confidence"] == 0.8 and "name" not in body and "max_samples" not in body


def test_with_wait_it_prints_only_the_new_dataset_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _serve(monkeypatch, RESULT)
    assert main(["hard-set", "--pool", "builtin:digits", "--surrogate", "mdl_a", "--wait", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "dst_hard\n"
    assert "kept 12 of 359 samples" in captured.err and "surrogate mdl_b: accuracy 85.0%" in captured.err


def test_nothing_kept_prints_no_id_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = {**RESULT, "dataset_id": None, "kept": 0, "message": "no sample of the 359 was misclassified"}
    _serve(monkeypatch, empty)
    assert main(["hard-set", "--pool", "builtin:digits", "--surrogate", "mdl_a", "--wait", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no sample of the 359" in captured.err


def test_a_bad_confidence_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _serve(monkeypatch, RESULT)
    assert (
        main(["hard-set", "--pool", "builtin:digits", "--surrogate", "mdl_a", "--min-confidence", "2"]) == 2
    )
    assert "min_confidence" in capsys.readouterr().err and seen == []
