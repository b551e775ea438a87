"""`parry jobs`, `cancel`, `models`, `datasets`, the result summary that waiting ends with, and `parry
report --format table`, against the real API app and the stand-in worker of test_client_cli.py."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from service.cli.commands import report_format
from service.cli.main import main
from tests.unit.api_helpers import Api
from tests.unit.cli import test_client_cli
from tests.unit.cli.test_client_cli import BAD_MODEL, Worker
from tests.unit.ui_fixtures import finished_job, training_result

# The stand-in worker and the project directory of the `parry check` tests.
worker, project = test_client_cli.worker, test_client_cli.project


def _submit(project: Path, capsys: pytest.CaptureFixture[str], *attacks: str) -> str:
    argv = ["submit", "--model", str(project / "model.zip"), "--dataset", str(project / "data.npz")]
    for attack in attacks:
        argv += ["--attack", attack]
    assert main(argv) == 0
    return capsys.readouterr().out.strip()


def test_wait_ends_with_the_result_summary(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker.levels = lambda name, eps: {0.1: 0.5, 0.3: 0.25}.get(eps, 0.4) - (0.1 if name == "pgd" else 0)
    job_id = _submit(project, capsys, "fgsm:eps=0.1,0.3", "pgd:eps=0.1,0.3,steps=5")
    assert main(["wait", job_id, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"job {job_id} (evaluation): succeeded"
    text = "\n".join(lines)
    assert "clean accuracy 95.0%" in text
    rows = {tuple(line.split("│")[1:4]): line for line in lines if "│" in line}
    by_label = {tuple(c.strip() for c in key): row for key, row in rows.items()}
    assert "50.0%" in by_label[("fgsm", "linf", "0.1")] and "25.0%" in by_label[("fgsm", "linf", "0.3")]
    assert "40.0%" in by_label[("pgd-5", "linf", "0.1")] and "15.0%" in by_label[("pgd-5", "linf", "0.3")]


def test_submit_wait_prints_the_summary_too(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "--model", str(project / "model.zip"), "--dataset", str(project / "data.npz"),
            "--attack", "fgsm:eps=0.1", "--wait", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(evaluation): succeeded" in out and "robust acc" in out and "60.0%" in out


def test_a_training_summary_names_the_new_model(
    api: Api, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {"model_id": "mdl_x", "dataset_id": "builtin:mnist-5k:train", "method": "fgsm-rs", "eps": 0.3}
    job_id = finished_job(
        api.store, owner="local", kind="training", spec=spec, result=training_result("mdl_robust")
    )
    assert main(["wait", job_id, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "new model: mdl_robust" in out
    assert "before → after training" in out and "fgsm-rs training, 5 epochs" in out
    assert "note: the eps ramp took the first 2 epochs" in out
    assert main(["report", job_id, "--format", "table"]) == 0
    assert "new model: mdl_robust" in capsys.readouterr().out


def test_report_is_a_table_on_a_terminal_and_json_otherwise(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert report_format(None, to_file=True) == "json"
    assert report_format("markdown", to_file=False) == "markdown"
    job_id = _submit(project, capsys, "fgsm:eps=0.1")
    assert main(["wait", job_id, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", job_id]) == 0  # captured: not a terminal
    assert json.loads(capsys.readouterr().out)["num_samples"] == 200
    assert main(["report", job_id, "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "robust acc" in table and "fgsm" in table and "{" not in table
    assert main(["report", job_id, "--format", "table", "-o", str(tmp_path / "r.txt")]) == 0
    assert "robust acc" in (tmp_path / "r.txt").read_text()
    assert main(["report", job_id, "--format", "markdown"]) == 0
    assert "| attack |" in capsys.readouterr().out


def test_report_table_of_an_unfinished_job_is_the_servers_sentence(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _submit(project, capsys, "fgsm:eps=0.1")
    assert main(["report", job_id, "--format", "table"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("parry: ") and job_id in err and "Traceback" not in err


def test_cancel_a_queued_job(worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _submit(project, capsys, "fgsm:eps=0.1")
    assert main(["cancel", job_id]) == 0
    assert capsys.readouterr().out.strip() == f"job {job_id} (evaluation): cancelled"
    assert worker.runs == []
    assert main(["cancel", "job_nope"]) == 2
    assert "job_nope" in capsys.readouterr().err


def test_jobs_lists_and_filters_by_status(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _submit(project, capsys, "fgsm:eps=0.1")
    assert main(["wait", done, "--quiet"]) == 0
    capsys.readouterr()
    queued = _submit(project, capsys, "fgsm:eps=0.2")
    assert main(["jobs", "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [queued, done]
    assert main(["jobs", "--status", "queued", "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [queued]
    assert main(["jobs", "--status", "queued", "--status", "succeeded", "--json"]) == 0
    assert {j["id"] for j in json.loads(capsys.readouterr().out)} == {queued, done}
    assert main(["jobs"]) == 0
    table = capsys.readouterr().out
    assert done in table and queued in table and "worst robust 60.0%" in table
    with pytest.raises(SystemExit):
        main(["jobs", "--status", "finished"])
    assert "invalid choice" in capsys.readouterr().err


def test_models_and_datasets(worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upload-model", str(project / "model.zip"), "--name", "cnn"]) == 0
    model_id = capsys.readouterr().out.strip()
    assert main(["upload-dataset", str(project / "data.npz")]) == 0
    dataset_id = capsys.readouterr().out.strip()
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert model_id in table and "cnn" in table and "ready" in table
    assert main(["models", "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [model_id]
    assert main(["datasets"]) == 0
    table = capsys.readouterr().out
    assert dataset_id in table and "builtin:digits" in table and "200" in table


# ---- parry check: no thresholds, and the reports of a check that could not run ---------------------------


def _reports(project: Path) -> tuple[str, ...]:
    return ("--junit", str(project / "out/junit.xml"), "--json", str(project / "out/check.json"),
            "--markdown", str(project / "out/summary.md"))  # fmt: skip


def test_check_without_thresholds_exits_0_and_says_so(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (project / "parry.toml").read_text()
    text = text.replace("min_robust_accuracy = 0.3\n", "").replace("min_robust_accuracy = 0.2\n", "")
    (project / "parry.toml").write_text(text.replace("use_lower_bound = true\n", ""))
    worker.levels = lambda name, eps: 0.0
    assert main(["check", "--config", str(project / "parry.toml"), "--quiet", *_reports(project)]) == 0
    captured = capsys.readouterr()
    assert "no thresholds set" in captured.err and "passed" not in captured.err
    assert "PASS" not in captured.out
    root = ET.parse(project / "out/junit.xml").getroot()
    assert root.get("skipped") == "3" and root.get("failures") == "0"
    skipped = root.findall("testsuite/testcase/skipped")
    assert [s.get("message") for s in skipped] == ["no thresholds set"] * 3
    assert "no thresholds set" in (project / "out/summary.md").read_text()
    body = json.loads((project / "out/check.json").read_text())
    assert body["thresholds_set"] is False


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (lambda p: (p / "parry.toml").write_text("[model\n"), "is not valid TOML"),
        (lambda p: (p / "parry.toml").write_text(BAD_MODEL), "the server rejected model model.zip"),
    ],
)
def test_a_check_that_cannot_run_still_writes_its_reports(
    worker: Worker,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[Path], object],
    sentence: str,
) -> None:
    change(project)
    assert main(["check", "--config", str(project / "parry.toml"), "--quiet", *_reports(project)]) == 2
    err = capsys.readouterr().err
    assert sentence in err
    message = err.removeprefix("parry: ").strip()
    failure = ET.parse(project / "out/junit.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == message
    body = json.loads((project / "out/check.json").read_text())
    assert body["passed"] is False and body["error"] == message
    assert sentence in (project / "out/summary.md").read_text()


def test_a_failed_job_writes_its_id_into_the_error_reports(
    worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker.fail_jobs = True
    assert main(["check", "--config", str(project / "parry.toml"), "--quiet", *_reports(project)]) == 2
    body = json.loads((project / "out/check.json").read_text())
    assert body["job_id"] == worker.runs[0] and "out of memory" in body["error"]


def test_hints_name_the_cli_command_not_the_route(worker: Worker, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "--model", "mdl_missing", "--dataset", "builtin:digits", "--attack", "fgsm:eps=0.1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "upload it with `parry upload-model FILE`" in err and "POST /v1/models" not in err


def test_submit_with_an_ood_dataset_needs_no_attack(
    api: Api, worker: Worker, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "--model", str(project / "model.zip"), "--dataset", str(project / "data.npz"),
            "--ood-dataset", str(project / "data.npz"), "--ood-scores", "energy,msp"]  # fmt: skip
    assert main(argv) == 0
    job_id = capsys.readouterr().out.strip()
    spec = api.store.get_job(job_id).spec
    assert spec["attacks"] == [] and spec["ood"]["scores"] == ["energy", "msp"]
    assert spec["ood"]["dataset_id"] == spec["dataset_id"]  # the same bytes: one upload
    assert main(["submit", "--model", "mdl_x", "--dataset", "builtin:digits"]) == 2
    assert "at least one --attack, or --ood-dataset" in capsys.readouterr().err
    assert main([*argv[:5], "--attack", "fgsm:eps=0.1", "--ood-scores", "msp"]) == 2
    assert "--ood-scores needs --ood-dataset" in capsys.readouterr().err


def test_an_evaluation_summary_shows_its_corruptions() -> None:
    from rich.console import Console

    from service.cli.tables import job_summary
    from service.domain.results import CorruptionItem, CorruptionsResult
    from tests.unit.check_helpers import fake_result

    result = fake_result([{"name": "fgsm", "eps": 0.1}])
    result.corruptions = CorruptionsResult(
        items=[CorruptionItem(name="contrast", severity=5, accuracy=0.3)],
        mean_accuracy=0.3,
        relative_error=7.0,
    )
    console = Console(width=200, record=True)
    for part in job_summary({"kind": "evaluation", "result": result.model_dump(mode="json")}):
        console.print(part)
    text = console.export_text()
    assert "common corruptions" in text and "contrast" in text and "30.0%" in text
