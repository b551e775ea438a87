"""Calibration and OOD in thresholds, JUnit, Markdown, the CLI table, parry.toml and the HTML page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cli.config import CheckConfigError, load_config
from service.cli.tables import result_table
from service.domain.metric_paths import MetricPathError, parse_metric
from service.domain.results import EvaluationResult
from service.domain.specs import EvaluationSpec, Threshold
from service.domain.verdicts import judge
from service.reports.junit import junit_report
from service.reports.markdown import markdown_report
from tests.unit.api_helpers import Api
from tests.unit.ui_fixtures import finished_job
from workers.evaluation.calibration import calibration
from workers.evaluation.ood import ood_results

SVG = "{http://www.w3.org/2000/svg}"


def natural_result() -> EvaluationResult:
    """An evaluation without attacks: calibration on 50 samples, OOD by msp and energy."""
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 50)
    correct = rng.uniform(0, 1, 50) < confidence
    in_scores = np.stack([rng.normal(2, 1, 50), rng.normal(5, 1, 50)], axis=1)
    out_scores = np.stack([rng.normal(0, 1, 40), rng.normal(4, 1, 40)], axis=1)
    return EvaluationResult(
        num_samples=50, clean_accuracy=float(correct.mean()), attacks=[], model_sha256="m" * 64,
        dataset_sha256="d" * 64, seed=0, calibration=calibration(confidence, correct),
        ood=ood_results(["msp", "energy"], in_scores, out_scores), ood_dataset_sha256="o" * 64,
    )  # fmt: skip


def test_metric_paths_name_ood_and_calibration_figures() -> None:
    assert str(parse_metric("ood.energy.fpr_at_95_tpr")) == "ood.energy.fpr_at_95_tpr"
    assert parse_metric("calibration.ece").figure == "ece"
    for bad, says in (("ood.odin.auroc", "score must be"), ("ood.msp.auc", "figure must be"),
                      ("calibration.brier", "calibration.ece")):  # fmt: skip
        with pytest.raises(MetricPathError, match=says):
            parse_metric(bad)


def test_a_threshold_on_an_ood_score_the_evaluation_lacks_is_refused() -> None:
    base = {"model_id": "m", "dataset_id": "d", "ood": {"dataset_id": "o", "scores": ["msp"]}}
    EvaluationSpec.model_validate(base | {"thresholds": [{"metric": "ood.msp.auroc", "min": 0.9}]})
    with pytest.raises(ValueError, match="no energy OOD score"):
        EvaluationSpec.model_validate(base | {"thresholds": [{"metric": "ood.energy.auroc", "min": 0.9}]})


def test_thresholds_judge_the_figures_and_the_reports_list_them() -> None:
    result = natural_result()
    auroc = (result.ood or [])[0].auroc
    ece = result.calibration.ece if result.calibration else 0.0
    bars = [
        Threshold(metric="ood.msp.auroc", min=min(1.0, auroc + 0.01)),  # just misses
        Threshold(metric="calibration.ece", max=min(1.0, ece + 0.01)),  # just holds
    ]
    outcomes = judge(result, [], bars)
    assert [o.passed for o in outcomes] == [False, True]
    assert outcomes[0].robust_accuracy == auroc and "below the required" in outcomes[0].message
    assert "95% CI" not in outcomes[1].message
    suite = ET.fromstring(junit_report(result, outcomes)).find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "2"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert float(properties["ood.energy.auroc"] or 0) == pytest.approx((result.ood or [])[1].auroc, abs=1e-6)
    assert "calibration.rms_calibration_error" in properties
    text = markdown_report(result, outcomes)
    assert "ran no attack" in text and "`ood.msp.fpr_at_95_tpr`" in text and "`calibration.ece`" in text
    assert "❌" in text


def test_the_cli_table_says_there_is_no_robust_figure() -> None:
    caption = str(result_table(natural_result()).caption)
    assert "ran no attack" in caption and "ood.energy.auroc" in caption


def test_parry_toml_takes_an_ood_table_and_max_ece(tmp_path: Path) -> None:
    (tmp_path / "ood.npz").write_bytes(b"")
    path = tmp_path / "parry.toml"
    path.write_text(
        'max_ece = 0.1\n[model]\nid = "mdl_x"\n[dataset]\nid = "builtin:digits"\n'
        '[ood]\npath = "ood.npz"\nscores = ["msp", "energy"]\nmin_ood_auroc = 0.8\n'
    )
    config = load_config(path)
    assert config.attack_specs() == []
    metrics = {(t.metric, t.min, t.max) for t in config.thresholds()}
    assert metrics == {
        ("calibration.ece", None, 0.1),
        ("ood.msp.auroc", 0.8, None),
        ("ood.energy.auroc", 0.8, None),
    }
    spec = config.evaluation_spec(model_id="mdl_x", dataset_id="builtin:digits", ood_dataset_id="dst_o")
    assert spec["ood"] == {"dataset_id": "dst_o", "scores": ["msp", "energy"]} and spec["attacks"] == []
    EvaluationSpec.model_validate(spec)
    path.write_text('[model]\nid = "mdl_x"\n[dataset]\nid = "builtin:digits"\n')
    with pytest.raises(CheckConfigError, match=r"\[\[checks\]\] table \(an attack\), an \[ood\] table"):
        load_config(path)


def test_parry_toml_takes_corruptions_alone_and_min_corruption_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "parry.toml"
    head = 'min_corruption_accuracy = 0.7\n[model]\nid = "mdl_x"\n[dataset]\nid = "builtin:digits"\n'
    path.write_text(head + '[evaluation.corruptions]\nnames = ["contrast"]\nseverities = [1, 5]\n')
    config = load_config(path)
    assert config.attack_specs() == []
    assert [(t.metric, t.min) for t in config.thresholds()] == [("corruptions.mean_accuracy", 0.7)]
    body = config.evaluation_spec(model_id="mdl_x", dataset_id="builtin:digits")
    spec = EvaluationSpec.model_validate(body)
    assert spec.attacks == [] and spec.corruptions is not None and spec.corruptions.severities == [1, 5]
    # The bar needs the corruptions it judges.
    path.write_text(head + '[[checks]]\nattack = "fgsm"\neps = 0.1\nmin_robust_accuracy = 0.1\n')
    with pytest.raises(CheckConfigError, match=r"min_corruption_accuracy needs an \[evaluation"):
        load_config(path)


def _page(api: Api, result: dict[str, Any]) -> str:
    model, _ = api.store.add_model(
        owner="local", name="m", sha256="e" * 64, format="keras", size_bytes=10, output="logits"
    )
    spec = {"model_id": model.id, "dataset_id": "builtin:digits", "ood": {"dataset_id": "builtin:digits"}}
    job_id = finished_job(api.store, owner="local", kind="evaluation", spec=spec, result=result)
    response = api.client.get(f"/ui/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.text


def test_the_page_draws_calibration_and_ood_without_attacks(api: Api) -> None:
    html = _page(api, natural_result().model_dump(mode="json"))
    assert "Calibration" in html and "Out-of-distribution detection" in html and "ran no attack" in html
    charts = [ET.fromstring(m) for m in re.findall(r"<svg class=\"chart\".*?</svg>", html, flags=re.S)]
    titles = [c.get("aria-label") or "".join(c.itertext())[:80] for c in charts]
    reliability = [c for c, t in zip(charts, titles, strict=True) if "Reliability" in t]
    assert reliability and len(reliability[0].findall(f"{SVG}rect")) > 0
    rocs = [c for c, t in zip(charts, titles, strict=True) if "ROC" in t]
    assert len(rocs) == 2 and all(c.findall(f"{SVG}polyline") for c in rocs)
    assert len(charts) == 1 + 2 * 2  # the reliability diagram, then a histogram and a ROC per score


def test_old_results_without_the_new_fields_still_render(api: Api) -> None:
    old = natural_result().model_dump(mode="json")
    for key in ("calibration", "ood", "ood_dataset_sha256"):
        old.pop(key)
    assert EvaluationResult.model_validate(old).calibration is None
    html = _page(api, old)
    assert "Calibration" not in html
