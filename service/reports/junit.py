"""JUnit XML: one testcase per attack × eps, a failure carrying the numbers, for CI test-report views."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from service.domain.results import EvaluationResult
from service.domain.verdicts import NO_THRESHOLDS, CheckOutcome, is_judged, pct
from service.reports.figures import natural_figures


def junit_report(
    result: EvaluationResult,
    outcomes: Sequence[CheckOutcome],
    *,
    job_id: str | None = None,
    reused_from: str | None = None,
    suite_name: str = "parry robustness",
) -> str:
    """A `<testsuites>` document with one `<testsuite>` holding a `<testcase>` per outcome; an outcome that
    no threshold judged is `<skipped message="no thresholds set">`, never a pass."""
    failures = sum(not o.passed for o in outcomes)
    skipped = sum(not is_judged(o) for o in outcomes)
    seconds = f"{sum(o.seconds for o in outcomes):.3f}"
    counts = {"tests": str(len(outcomes)), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    root = ET.Element("testsuites", {"name": suite_name, **counts, "time": seconds})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts, "time": seconds})
    properties = ET.SubElement(suite, "properties")
    facts = {
        "job_id": job_id,
        "reused_from": reused_from,
        "num_samples": str(result.num_samples),
        "clean_accuracy": f"{result.clean_accuracy:.6f}",
        "seed": str(result.seed),
        "model_sha256": result.model_sha256,
        "dataset_sha256": result.dataset_sha256,
    }
    facts |= {name: f"{value:.6f}" for name, value in natural_figures(result).items()}
    for name, value in facts.items():
        if value is not None:
            ET.SubElement(properties, "property", {"name": name, "value": value})
    for outcome in outcomes:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"parry.{outcome.attack}", "name": outcome.name, "time": f"{outcome.seconds:.3f}"},
        )
        numbers = _numbers(outcome)
        if not outcome.passed:
            failure = ET.SubElement(
                case, "failure", {"message": outcome.message, "type": "RobustnessCheckFailed"}
            )
            failure.text = numbers
        elif not is_judged(outcome):
            ET.SubElement(case, "skipped", {"message": NO_THRESHOLDS})
        ET.SubElement(case, "system-out").text = numbers
    if result.warnings:
        ET.SubElement(suite, "system-err").text = "\n".join(f"warning: {w}" for w in result.warnings)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _numbers(outcome: CheckOutcome) -> str:
    lo, hi = outcome.ci95
    if outcome.is_norm:  # a minimum-norm statistic: a distance, no sampling interval
        lines = [f"value={outcome.shown(outcome.robust_accuracy)}"]
        if outcome.min_robust_accuracy is not None:
            lines.append(f"min={outcome.min_robust_accuracy:g}")
        if outcome.max_value is not None:
            lines.append(f"max={outcome.max_value:g}")
        return "\n".join([*lines, outcome.message])
    if outcome.attack in ("ood", "calibration"):  # a figure of its own, without a sampling interval
        lines = [f"{outcome.metric}={outcome.robust_accuracy:.6f}"]
    else:
        lines = [
            f"robust_accuracy={outcome.robust_accuracy:.6f} ({pct(outcome.robust_accuracy)})",
            f"ci95=[{lo:.6f}, {hi:.6f}] ({pct(lo)}–{pct(hi)}, Wilson, {outcome.num_samples} samples)",
        ]
    if outcome.min_robust_accuracy is not None:
        bound = "lower bound of ci95" if outcome.use_lower_bound else "estimate"
        lines.append(f"min_robust_accuracy={outcome.min_robust_accuracy:g} (judged on the {bound})")
    if outcome.max_value is not None:
        bound = "upper bound of ci95" if outcome.use_lower_bound else "estimate"
        lines.append(f"max={outcome.max_value:g} (judged on the {bound})")
    if outcome.baseline_robust_accuracy is not None:
        lines.append(
            f"baseline_robust_accuracy={outcome.baseline_robust_accuracy:.6f} "
            f"max_regression={outcome.max_regression:g}"
        )
    lines.append(outcome.message)
    return "\n".join(lines)


def junit_error_report(
    message: str, *, job_id: str | None = None, suite_name: str = "parry robustness"
) -> str:
    """The report of a check that could not run: one failed test case carrying the sentence, so a CI's
    test view shows why instead of nothing."""
    counts = {"tests": "1", "failures": "1", "errors": "0", "skipped": "0", "time": "0.000"}
    root = ET.Element("testsuites", {"name": suite_name, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts})
    if job_id is not None:
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", {"name": "job_id", "value": job_id})
    case = ET.SubElement(suite, "testcase", {"classname": "parry", "name": "parry check", "time": "0.000"})
    ET.SubElement(case, "failure", {"message": message, "type": "CheckCouldNotRun"}).text = message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
