"""JUnit and Markdown reports, as pure functions and through `GET /v1/jobs/{id}/report?format=...`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from service.domain.specs import FGSMSpec, PGDSpec, Threshold
from service.domain.verdicts import judge, outcomes_for_job
from service.reports.junit import junit_error_report, junit_report
from service.reports.markdown import markdown_error_report, markdown_report
from tests.unit.api_helpers import Api, assert_problem
from tests.unit.check_helpers import fake_result

ATTACKS: list[dict[str, Any]] = [
    {"name": "pgd", "eps": 0.1, "steps": 10},
    {"name": "fgsm", "eps": [0.1, 0.3]},
]
SPEC: dict[str, Any] = {
    "attacks": ATTACKS,
    "thresholds": [
        {"attack": 0, "min_robust_accuracy": 0.5},
        {"attack": 1, "min_robust_accuracy": 0.5, "use_lower_bound": True},
    ],
}


def _levels(name: str, eps: float) -> float:
    return {("pgd", 0.1): 0.6, ("fgsm", 0.1): 0.7, ("fgsm", 0.3): 0.2}[(name, eps)]


def test_junit_has_one_testcase_per_attack_and_eps_and_failures_carry_numbers() -> None:
    result = fake_result(ATTACKS, _levels, warnings=["robust accuracy rises with eps"])
    text = junit_report(result, outcomes_for_job(SPEC, result), job_id="job_1", reused_from="job_0")
    root = ET.fromstring(text)
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["job_id"] == "job_1" and props["reused_from"] == "job_0" and props["num_samples"] == "200"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["pgd-10 linf eps=0.1", "fgsm linf eps=0.1", "fgsm linf eps=0.3"]
    assert [c.find("failure") is None for c in cases] == [True, True, False]
    failure = cases[2].find("failure")
    assert failure is not None and failure.text is not None
    assert "20.0%" in str(failure.get("message")) and "lower bound" in str(failure.get("message"))
    assert "robust_accuracy=0.200000" in failure.text and "min_robust_accuracy=0.5" in failure.text
    assert "ci95=[" in failure.text
    assert "robust accuracy rises with eps" in (suite.findtext("system-err") or "")


def test_junit_without_thresholds_skips_every_testcase_saying_so() -> None:
    result = fake_result(ATTACKS, lambda name, eps: 0.0)  # 0% robust: nothing may read "passed"
    root = ET.fromstring(junit_report(result, outcomes_for_job({"attacks": ATTACKS}, result)))
    assert root.get("tests") == "3" and root.get("failures") == "0" and root.get("skipped") == "3"
    cases = root.findall("testsuite/testcase")
    assert [c.find("skipped").get("message") for c in cases] == ["no thresholds set"] * 3  # type: ignore[union-attr]


def test_junit_skips_only_the_outcomes_no_threshold_judged() -> None:
    result = fake_result(ATTACKS, _levels)
    spec = {"attacks": ATTACKS, "thresholds": [{"attack": 0, "min_robust_accuracy": 0.5}]}
    root = ET.fromstring(junit_report(result, outcomes_for_job(spec, result)))
    cases = root.findall("testsuite/testcase")
    assert [c.find("skipped") is None for c in cases] == [True, False, False]
    assert root.get("skipped") == "2" and root.get("failures") == "0"


def test_markdown_without_thresholds_says_so_and_never_passed() -> None:
    result = fake_result(ATTACKS, lambda name, eps: 0.0)
    text = markdown_report(result, outcomes_for_job({"attacks": ATTACKS}, result))
    assert text.splitlines()[0] == "### ➖ Parry robustness check: no thresholds set"
    assert "passed" not in text and "✅" not in text
    assert sum(line.startswith("| — |") for line in text.splitlines()) == 3


def test_markdown_counts_the_outcomes_without_a_threshold_apart() -> None:
    result = fake_result(ATTACKS, _levels)
    spec = {"attacks": ATTACKS, "thresholds": [{"attack": 0, "min_robust_accuracy": 0.5}]}
    text = markdown_report(result, outcomes_for_job(spec, result))
    assert text.splitlines()[0] == "### ✅ Parry robustness check: 1 passed, 2 with no thresholds set"


def test_error_reports_carry_the_sentence() -> None:
    root = ET.fromstring(junit_error_report("the server rejected model m.keras: bad", job_id="job_9"))
    assert root.get("tests") == "1" and root.get("failures") == "1"
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == "the server rejected model m.keras: bad"
    assert root.find("testsuite/properties/property").get("value") == "job_9"  # type: ignore[union-attr]
    assert "could not run" in markdown_error_report("x") and "x" in markdown_error_report("x")


def test_markdown_table_has_a_row_per_outcome_and_lists_the_failures() -> None:
    result = fake_result(ATTACKS, _levels)
    text = markdown_report(result, outcomes_for_job(SPEC, result), job_id="job_1")
    lines = text.splitlines()
    assert lines[0] == "### ❌ Parry robustness check: 2 passed, 1 failed"
    rows = [line for line in lines if line.startswith(("| ✅", "| ❌"))]
    assert len(rows) == 3
    assert rows[0].startswith("| ✅ | pgd-10 linf eps=0.1 | 60.0% |") and "≥ 50.0%" in rows[0]
    assert rows[2].startswith("| ❌ | fgsm linf eps=0.3 | 20.0% |") and "(lower bound)" in rows[2]
    assert "- **fgsm linf eps=0.3**: robust accuracy 20.0%" in text
    assert "job `job_1`" in text


def test_markdown_shows_the_baseline_column_only_with_a_baseline() -> None:
    result = fake_result(ATTACKS, _levels)
    baseline = fake_result(ATTACKS, lambda n, e: 0.65)
    specs: list[FGSMSpec | PGDSpec] = [PGDSpec(eps=0.1, steps=10), FGSMSpec(eps=[0.1, 0.3])]
    text = markdown_report(
        result, judge(result, specs, [Threshold(attack=0, min_robust_accuracy=0.1)], baseline=baseline)
    )
    assert "| baseline |" in text and "65.0% (-5.0)" in text and "65.0% (+5.0)" in text
    assert "| baseline |" not in markdown_report(result, judge(result, specs))


# ---- the report route -------------------------------------------------------------------------------


def _succeeded_job(api: Api, spec: dict[str, Any], result: dict[str, Any]) -> str:
    job, _ = api.store.create_job(owner="local", kind="evaluation", spec=spec)
    assert api.store.claim(job.id, worker="w", lease_seconds=60) is not None
    assert api.store.finish(job.id, worker="w", status="succeeded", result=result)
    return job.id


def test_the_route_gives_the_same_junit_and_markdown_as_the_functions(api: Api) -> None:
    result = fake_result(ATTACKS, _levels)
    job_id = _succeeded_job(api, SPEC, result.model_dump(mode="json"))
    outcomes = outcomes_for_job(SPEC, result)
    junit = api.client.get(f"/v1/jobs/{job_id}/report?format=junit")
    assert junit.status_code == 200 and junit.headers["content-type"].startswith("application/xml")
    assert junit.text == junit_report(result, outcomes, job_id=job_id)
    markdown = api.client.get(f"/v1/jobs/{job_id}/report", params={"format": "markdown"})
    assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text == markdown_report(result, outcomes, job_id=job_id)


def test_the_route_refuses_unfinished_jobs_and_results_it_cannot_read(api: Api) -> None:
    job, _ = api.store.create_job(owner="local", kind="evaluation", spec=SPEC)
    assert_problem(api.client.get(f"/v1/jobs/{job.id}/report?format=junit"), 409)
    job_id = _succeeded_job(api, SPEC, {"num_samples": 3})
    problem = assert_problem(api.client.get(f"/v1/jobs/{job_id}/report?format=markdown"), 422)
    assert "cannot be shown as markdown" in str(problem["detail"])
    training = _succeeded_job(api, {}, {"history": []})
    api.store.engine.dispose()
    with api.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET kind = 'training' WHERE id = ?", (training,))
    problem = assert_problem(api.client.get(f"/v1/jobs/{training}/report?format=junit"), 422)
    assert "evaluation jobs" in str(problem["detail"])


def test_markdown_and_junit_list_corruption_bars() -> None:
    from service.domain.results import CorruptionItem, CorruptionsResult

    result = fake_result(ATTACKS, _levels)
    result.corruptions = CorruptionsResult(
        items=[CorruptionItem(name="contrast", severity=5, accuracy=0.3)],
        mean_accuracy=0.3,
        relative_error=7.0,
    )
    spec = {**SPEC, "corruptions": {"names": ["contrast"], "severities": [5]},
            "thresholds": [{"metric": "corruptions.contrast.5", "min": 0.5}]}  # fmt: skip
    outcomes = outcomes_for_job(spec, result)
    text = markdown_report(result, outcomes)
    assert "| ❌ | contrast severity 5 | 30.0% |" in text
    assert (
        "Common corruptions: mean accuracy 30.0% over 1 corruption × severity items, 7.00× the clean" in text
    )
    root = ET.fromstring(junit_report(result, outcomes))
    case = next(c for c in root.iter("testcase") if c.get("name") == "contrast severity 5")
    assert case.get("classname") == "parry.corruptions" and case.find("failure") is not None
