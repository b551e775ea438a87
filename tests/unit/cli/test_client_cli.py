"""`parry check` and the other server commands, against the real API app (TestClient) and a stand-in worker.

The stand-in worker runs whenever the client would sleep between polls: it marks uploaded models ready
(or rejected) and finishes queued jobs with a made-up result, so every test is deterministic and fast.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.client import ParryClient
from service.cli.main import main
from service.store.jobs import JobStore
from tests.unit.api_helpers import Api, saved_model_zip
from tests.unit.check_helpers import fake_result

CONFIG = """
[model]
path = "model.zip"
[dataset]
path = "data.npz"
[evaluation]
batch_size = 50
[[checks]]
attack = "pgd"
eps = 0.1
steps = 5
min_robust_accuracy = {pgd}
[[checks]]
attack = "fgsm"
eps = [0.1, 0.3]
min_robust_accuracy = 0.2
use_lower_bound = true
"""

BAD_MODEL = CONFIG.format(pgd=0.3).replace('path = "model.zip"', 'path = "model.zip"\nname = "bad-cnn"')


@dataclass
class Worker:
    """Finishes what the API queued; `levels(name, eps)` decides robust accuracies."""

    store: JobStore
    levels: Callable[[str, float], float] = lambda name, eps: 0.6
    fail_jobs: bool = False
    runs: list[str] = field(default_factory=list)

    def step(self, _seconds: float = 0.0) -> None:
        with self.store.engine.connect() as conn:
            models = [r[0] for r in conn.exec_driver_sql("SELECT id FROM models WHERE status = 'validating'")]
            queued = [r[0] for r in conn.exec_driver_sql("SELECT id FROM jobs WHERE status = 'queued'")]
        for model_id in models:
            if self.store.get_model(model_id).name.startswith("bad"):
                self.store.set_model_rejected(model_id, reason="the graph reads files (ReadFile)")
            else:
                self.store.set_model_ready(model_id, input_shape=[4], num_classes=3, output="logits")
        for job_id in queued:
            job = self.store.claim(job_id, worker="w", lease_seconds=60)
            assert job is not None
            self.runs.append(job_id)
            if self.fail_jobs:
                self.store.finish(
                    job_id, worker="w", status="failed", error={"type": "X", "detail": "out of memory"}
                )
                continue
            result = fake_result(job.spec["attacks"], self.levels, num_samples=200)
            self.store.finish(job_id, worker="w", status="succeeded", result=result.model_dump(mode="json"))


@pytest.fixture
def worker(api: Api, monkeypatch: pytest.MonkeyPatch) -> Worker:
    worker = Worker(api.store)
    transport = api.client._transport  # the app, in process

    def from_env(server: str | None = None, api_key: str | None = None, **kwargs: Any) -> ParryClient:
        return ParryClient("http://testserver", transport=transport, sleep=worker.step, **kwargs)

    monkeypatch.setattr(ParryClient, "from_env", staticmethod(from_env))
    # This fake worker moves only when the client sleeps between polls, so these tests take the polling
    # path; a live event stream would wait for it forever (events: test_client.py, e2e/test_events.py).
    monkeypatch.setattr(ParryClient, "follow_job", lambda self, job_id, timeout=None: iter(()))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    for name in ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "CI_PIPELINE_ID", "CI_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    return worker


@pytest.fixture
def project(tmp_path: Path) -> Path:
    import numpy as np

    from tests.unit.api_helpers import npz_bytes

    root = tmp_path / "repo"
    root.mkdir()
    (root / "model.zip").write_bytes(saved_model_zip(b"cnn"))
    (root / "data.npz").write_bytes(npz_bytes(x=np.zeros((200, 4), np.float32), y=np.arange(200) % 3))
    (root / "parry.toml").write_text(CONFIG.format(pgd=0.3))
    return root


def check(project: Path, *extra: str) -> int:
    return main(["check", "--config", str(project / "parry.toml"), "--quiet", *extra])


def test_check_passes_and_writes_every_report(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = project / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = project / "out"
    code = check(project, "--junit", str(out / "junit.xml"), "--json", str(out / "check.json"),
                 "--markdown", str(out / "summary.md"))  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "parry: all 3 checks passed" in captured.err and "Traceback" not in captured.err
    assert "pgd-5 linf eps=0.1" in captured.out and "PASS" in captured.out
    root = ET.parse(project / "out/junit.xml").getroot()
    assert root.get("tests") == "3" and root.get("failures") == "0"
    report = json.loads((project / "out/check.json").read_text())
    assert report["passed"] is True and report["job_id"] == worker.runs[0] and report["reused_from"] is None
    assert [c["passed"] for c in report["checks"]] == [True, True, True]
    markdown = (project / "out/summary.md").read_text()
    assert markdown.startswith("### ✅ Parry robustness check: all 3 passed")
    assert summary.read_text() == "earlier step\n" + markdown + "\n"


def test_check_fails_with_exit_1_and_junit_marks_the_failing_testcase(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "parry.toml").write_text(CONFIG.format(pgd=0.9))
    worker.levels = lambda name, eps: (
        0.6 if eps < 0.2 else 0.21
    )  # fgsm 0.3: estimate above 0.2, lower bound not
    code = check(project, "--junit", str(project / "junit.xml"))
    err = capsys.readouterr().err
    assert code == 1
    assert "parry: check failed: pgd-5 linf eps=0.1: robust accuracy 60.0% is below the required 90.0%" in err
    assert "(and 1 more)" in err
    cases = ET.parse(project / "junit.xml").getroot().iter("testcase")
    assert {c.get("name"): c.find("failure") is not None for c in cases} == {
        "pgd-5 linf eps=0.1": True,
        "fgsm linf eps=0.1": False,
        "fgsm linf eps=0.3": True,
    }


def test_a_second_identical_check_reuses_the_result_and_no_cache_runs_again(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = project / "check.json"
    assert check(project, "--json", str(out)) == 0
    first = json.loads(out.read_text())
    assert check(project, "--json", str(out)) == 0
    second = json.loads(out.read_text())
    assert second["reused_from"] == first["job_id"] != second["job_id"]
    assert second["result"] == first["result"] and len(worker.runs) == 1
    assert check(project, "--json", str(out), "--no-cache") == 0
    third = json.loads(out.read_text())
    assert third["reused_from"] is None and len(worker.runs) == 2
    # the model and the dataset were uploaded once: later runs found their bytes on the server
    assert len(worker.store.list_models("local")) == 1 and len(worker.store.list_datasets("local")) == 1


def test_a_retried_ci_step_gets_the_same_job(
    worker: Worker, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "1234")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "1")
    out = project / "check.json"
    assert check(project, "--json", str(out), "--no-cache") == 0
    first = json.loads(out.read_text())["job_id"]
    assert check(project, "--json", str(out), "--no-cache") == 0  # the step, retried
    assert json.loads(out.read_text())["job_id"] == first and len(worker.runs) == 1
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")  # a new attempt of the workflow is a new run
    assert check(project, "--json", str(out), "--no-cache") == 0
    assert json.loads(out.read_text())["job_id"] != first and len(worker.runs) == 2


def test_a_regression_from_the_baseline_fails(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = project / "baseline.json"
    assert check(project, "--json", str(baseline)) == 0
    base_job = json.loads(baseline.read_text())["job_id"]
    worker.levels = lambda name, eps: 0.55  # 5 points lower everywhere
    assert check(project, "--baseline", str(baseline), "--no-cache") == 1
    assert "fell from 60.0% (baseline) to 55.0%" in capsys.readouterr().err
    assert check(project, "--baseline", base_job, "--no-cache", "--tolerance", "0.06") == 0
    assert check(project, "--baseline", "job_nope", "--no-cache") == 2
    assert "cannot use job job_nope as the baseline" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: (p / "parry.toml").write_text("[model\n"), "is not valid TOML"),
        (lambda p: (p / "parry.toml").write_text(CONFIG.format(pgd="'high'")), "min_robust_accuracy"),
        (lambda p: (p / "model.zip").unlink(), "the model file"),
        (lambda p: (p / "parry.toml").write_text(BAD_MODEL), "the server rejected model model.zip"),
    ],
)  # fmt: skip
def test_a_check_that_cannot_run_exits_2_with_one_sentence(
    worker: Worker,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[Path], object],
    message: str,
) -> None:
    change(project)
    assert check(project) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("parry: ") and err.count("\n") == 1


def test_a_failed_job_exits_2(worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    worker.fail_jobs = True
    assert check(project) == 2
    assert "failed: out of memory" in capsys.readouterr().err


def test_a_server_that_is_down_exits_2(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    def from_env(server: str | None = None, api_key: str | None = None, **kwargs: Any) -> ParryClient:
        return ParryClient(
            server or "http://127.0.0.1:1",
            transport=httpx.MockTransport(refuse),
            sleep=lambda s: None,
            **kwargs,
        )

    monkeypatch.setattr(ParryClient, "from_env", staticmethod(from_env))
    assert check(project, "--retries", "2") == 2
    err = capsys.readouterr().err
    assert "did not answer" in err and "3 attempts" in err and err.count("\n") == 1


def test_no_checks_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 2
    assert "parry.toml does not exist" in capsys.readouterr().err


# ---- the other commands ------------------------------------------------------------------------------


def test_submit_status_wait_report_download(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["upload-model", str(project / "model.zip")]) == 0
    model_id = capsys.readouterr().out.strip()
    assert model_id.startswith("mdl_")
    code = main(
        ["submit", "--model", model_id, "--dataset", str(project / "data.npz"), "--attack", "fgsm:eps=0.1"]
    )
    job_id = capsys.readouterr().out.strip()
    assert code == 0 and job_id.startswith("job_")
    assert main(["status", job_id]) == 0
    assert capsys.readouterr().out.strip() == f"job {job_id} (evaluation): queued"
    assert main(["wait", job_id, "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"job {job_id} (evaluation): succeeded"
    assert main(["report", job_id, "--format", "junit", "-o", str(tmp_path / "r.xml")]) == 0
    assert ET.parse(tmp_path / "r.xml").getroot().get("tests") == "1"
    assert main(["report", job_id]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 200
    assert main(["download", job_id, "--dir", str(tmp_path / "dl")]) == 2  # the stand-in worker wrote none
    assert "has no artifacts" in capsys.readouterr().err
    assert main(["download", job_id, "report.json"]) == 2
    assert "has no artifact 'report.json' (it has: none)" in capsys.readouterr().err


def test_submit_rejects_bad_attacks_before_calling_the_server(
    worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["submit", "--model", "mdl_x", "--dataset", "builtin:digits", "--attack", "pgd:eps=0.1,stpes=3"])
        == 2
    )
    assert "'stpes' is not a field of this attack" in capsys.readouterr().err


def test_a_missing_job_is_one_sentence(worker: Worker, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "job_missing"]) == 2
    assert capsys.readouterr().err == "parry: job 'job_missing' does not exist (HTTP 404)\n"


def test_train_sends_a_valid_training_spec_with_an_idempotency_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "job_t", "kind": "training", "status": "queued"})

    def from_env(server_url: str | None = None, api_key: str | None = None, **kwargs: Any) -> ParryClient:
        return ParryClient("http://parry.test", transport=httpx.MockTransport(server), **kwargs)

    monkeypatch.setattr(ParryClient, "from_env", staticmethod(from_env))
    extra = tmp_path / "spec.json"
    extra.write_text(json.dumps({"lr_schedule": "cosine", "epochs": 3}))
    argv = ["train", "--model", "mdl_1", "--dataset", "builtin:mnist-5k:train", "--method", "fgsm-rs",
            "--eps", "0.3", "--epochs", "5", "--evaluate", "pgd:eps=0.3,steps=10",
            "--spec", str(extra)]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "job_t"
    (request,) = seen
    body = json.loads(request.content)
    assert request.url.path == "/v1/trainings" and request.headers["Idempotency-Key"].startswith("parry-")
    assert body["method"] == "fgsm-rs" and body["eps"] == 0.3 and body["epochs"] == 5  # flags win over --spec
    assert body["lr_schedule"] == "cosine" and body["evaluate"][0]["steps"] == 10
    assert main([*argv[:-2], "--epochs", "0"]) == 2  # refused before anything is sent
    assert "'epochs'" in capsys.readouterr().err and len(seen) == 1


def test_check_with_model_and_dataset_ids(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["upload-model", str(project / "model.zip"), "--no-wait"]) == 0
    model_id = capsys.readouterr().out.strip()
    config = CONFIG.format(pgd=0.3).replace('path = "model.zip"', f'id = "{model_id}"')
    (project / "parry.toml").write_text(config.replace('path = "data.npz"', 'id = "dst_missing"'))
    assert check(project) == 2
    assert "dataset 'dst_missing' does not exist" in capsys.readouterr().err
    assert main(["upload-dataset", str(project / "data.npz")]) == 0
    dataset_id = capsys.readouterr().out.strip()
    (project / "parry.toml").write_text(config.replace('path = "data.npz"', f'id = "{dataset_id}"'))
    assert check(project) == 0


def test_a_saved_model_directory_is_zipped_the_same_way_every_time(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = project / "saved_model"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01graph")
    (saved / "variables" / "variables.index").write_bytes(b"idx")
    (project / "parry.toml").write_text(CONFIG.format(pgd=0.3).replace('"model.zip"', '"saved_model"'))
    assert check(project) == 0
    assert check(project) == 0  # zipped again: the same bytes, so no second model
    (model,) = worker.store.list_models("local")
    assert model.name == "saved_model" and model.format == "saved_model"


def test_a_worst_case_threshold_is_its_own_check_and_fails_with_exit_1(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CONFIG.format(pgd=0.3) + '[[thresholds]]\nmetric = "worst_case.linf.0.1"\nmin = 0.7\n'
    (project / "parry.toml").write_text(text)
    worker.levels = lambda name, eps: 0.6 if eps < 0.2 else 0.4
    code = check(project, "--json", str(project / "check.json"))
    err = capsys.readouterr().err
    assert code == 1
    assert "check failed: worst case linf eps=0.1 (pgd, fgsm): worst_case.linf.0.1 is 60.0%" in err
    report = json.loads((project / "check.json").read_text())
    # The attacks' own bars keep their verdicts; the worst-case bar is a fourth check.
    assert [c["passed"] for c in report["checks"]] == [True, True, True, False]
    assert report["checks"][3]["metric"] == "worst_case.linf.0.1"
    spec = worker.store.get_job(worker.runs[0]).spec
    stored = spec["thresholds"][2]
    assert (stored["metric"], stored["min"], stored["attack"]) == ("worst_case.linf.0.1", 0.7, None)


def test_submit_sends_corruptions_and_refuses_unknown_ones_before_sending(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "job_c", "kind": "evaluation", "status": "queued"})

    def from_env(server_url: str | None = None, api_key: str | None = None, **kwargs: Any) -> ParryClient:
        return ParryClient("http://parry.test", transport=httpx.MockTransport(server), **kwargs)

    monkeypatch.setattr(ParryClient, "from_env", staticmethod(from_env))
    argv = ["submit", "--model", "mdl_1", "--dataset", "builtin:digits", "--attack", "fgsm:eps=0.1",
            "--corruptions", "all", "--severities", "1,3,5"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(seen[0].content)["corruptions"] == {"names": "all", "severities": [1, 3, 5]}
    capsys.readouterr()
    assert main([*argv[:-4], "--corruptions", "contrast,fog"]) == 2
    assert "unknown corruption fog; known: gaussian_noise" in capsys.readouterr().err
    assert main([*argv[:-4], "--severities", "2"]) == 2
    assert "--severities goes with --corruptions" in capsys.readouterr().err
    assert len(seen) == 1
