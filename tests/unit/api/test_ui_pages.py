"""The /ui pages through TestClient: they render, escape user text, draw SVG, and respect owners."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from service.domain.results import Progress
from service.store.artifacts import ArtifactStore
from tests.unit.api_helpers import Api, assert_problem, make_api
from tests.unit.ui_fixtures import EVIL, evaluation_result, finished_job, training_result, write_examples

SVG = "{http://www.w3.org/2000/svg}"


def _artifacts(api: Api) -> ArtifactStore:
    store: ArtifactStore = api.client.app.state.artifacts  # type: ignore[attr-defined]
    return store


def _evil_model(api: Api, owner: str = "local") -> str:
    model, _ = api.store.add_model(
        owner=owner, name=EVIL, sha256="e" * 64, format="keras", size_bytes=10, output="logits"
    )
    return model.id


def _evaluation(api: Api, owner: str = "local", **result_changes: object) -> str:
    spec = {
        "model_id": _evil_model(api, owner),
        "dataset_id": "builtin:digits",
        "attacks": [{"name": "fgsm"}],
    }
    result = {**evaluation_result(), **result_changes}
    return finished_job(api.store, owner=owner, kind="evaluation", spec=spec, result=result)


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg class=\"chart\".*?</svg>", html, flags=re.S)]


def test_evaluation_page_has_curves_bars_tables_and_facts(api: Api) -> None:
    job_id = _evaluation(api)
    response = api.client.get(f"/ui/jobs/{job_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    charts = _svgs(html)
    lines = [c for c in charts if c.findall(f"{SVG}polyline")]
    bars = [c for c in charts if c.findall(f"{SVG}rect")]
    assert lines and bars
    labels = {p.get("data-label") for p in lines[0].findall(f"{SVG}polyline")}
    assert labels == {"fgsm linf", "pgd linf 10 steps", "worst case"}
    # eps 0 (the clean accuracy) and the three eps values: four points per line.
    pgd = next(p for p in lines[0].findall(f"{SVG}polyline") if p.get("data-label") == "pgd linf 10 steps")
    assert len((pgd.get("points") or "").split()) == 4
    # Clean plus three eps per class, ten classes.
    assert len(bars[0].findall(f"{SVG}rect")) == 40
    assert "robust accuracy rises with eps for fgsm" in html
    assert "a" * 64 in html and "tensorflow version" in html
    assert "1.0%" in html  # pgd eps=0.3 in the attacks table


def test_user_text_is_escaped_everywhere(api: Api) -> None:
    job_id = _evaluation(api, warnings=[f"warning {EVIL}"])
    api.store.create_job(owner="local", kind="evaluation", spec={"model_id": "mdl_x", "note": EVIL})
    pages = [api.client.get(f"/ui/jobs/{job_id}").text, api.client.get("/ui").text]
    for html in pages:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script>alert" not in html
        # The only scripts are the UI's own file.
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/static/ui.js" defer>']
    rows = api.client.get("/ui/api/jobs").json()["items"]
    assert any(
        row["model"].startswith(EVIL) for row in rows
    )  # JSON carries it raw; the page sets textContent


def test_someone_elses_job_is_a_404_problem(api: Api) -> None:
    job_id = _evaluation(api, owner="someone-else")
    for path in (f"/ui/jobs/{job_id}", f"/ui/api/jobs/{job_id}", f"/ui/jobs/{job_id}/artifacts/report.json"):
        assert_problem(api.client.get(path), 404)
    assert job_id not in api.client.get("/ui").text
    assert api.client.get("/ui/api/jobs").json()["items"] == []


def test_example_grid_shows_png_images(api: Api) -> None:
    job_id = _evaluation(api)
    write_examples(_artifacts(api), job_id, k=4)
    html = api.client.get(f"/ui/jobs/{job_id}").text
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    # Four samples: clean, then adversarial and perturbation at two eps each.
    assert len(sources) == 4 * 5
    png = base64.b64decode(sources[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    assert int.from_bytes(png[16:20], "big") == 8 and int.from_bytes(png[20:24], "big") == 8
    assert "pgd linf eps=0.3" in html


def test_a_broken_examples_file_drops_the_grid_not_the_page(api: Api) -> None:
    job_id = _evaluation(api)
    _artifacts(api).write_job_artifact(job_id, "adversarial_examples.npz", b"not an npz")
    response = api.client.get(f"/ui/jobs/{job_id}")
    assert response.status_code == 200 and 'id="examples"' not in response.text


def test_training_page_has_curves_comparison_and_download(api: Api) -> None:
    model_id = _evil_model(api)
    spec = {"model_id": model_id, "dataset_id": "builtin:mnist-5k:train", "method": "fgsm-rs", "eps": 0.3}
    job_id = finished_job(
        api.store, owner="local", kind="training", spec=spec, result=training_result("mdl_new")
    )
    _artifacts(api).write_job_artifact(job_id, "model.zip", b"PK-not-really")
    html = api.client.get(f"/ui/jobs/{job_id}").text
    curves = re.search(r'id="training-curves">(.*?)</div>', html, flags=re.S)
    assert curves is not None
    charts = _svgs(curves.group(1))
    assert len(charts) == 2
    accuracy = {p.get("data-label"): p.get("points") for p in charts[0].findall(f"{SVG}polyline")}
    assert set(accuracy) == {"clean (validation)", "robust (validation)", "train (adversarial)"}
    assert all(len((points or "").split()) == 5 for points in accuracy.values())
    assert 'id="before-after"' in html and "+40.0 pts" in html
    assert f'href="/ui/jobs/{job_id}/artifacts/model.zip"' in html and "Download model.zip" in html
    assert "mdl_new" in html
    download = api.client.get(f"/ui/jobs/{job_id}/artifacts/model.zip")
    assert download.status_code == 200 and download.content == b"PK-not-really"


@pytest.mark.parametrize("kind", ["evaluation", "training"])
@pytest.mark.parametrize(
    "result",
    [
        {},
        {"attacks": [1, None, {"eps": "x"}], "worst_case": None, "history": "nonsense", "before": 3},
        {"history": [{"epoch": 1}, {"epoch": 2, "loss": None}], "after": {"attacks": []}, "notes": [EVIL]},
    ],
)
def test_odd_results_still_render(api: Api, kind: str, result: dict[str, object]) -> None:
    job_id = finished_job(api.store, owner="local", kind=kind, spec={}, result=result)
    response = api.client.get(f"/ui/jobs/{job_id}")
    assert response.status_code == 200 and "<script>alert" not in response.text


def test_running_and_failed_jobs(api: Api) -> None:
    running, _ = api.store.create_job(owner="local", kind="evaluation", spec={"model_id": "mdl_gone"})
    api.store.claim(running.id, worker="w", lease_seconds=60)
    api.store.report_progress(
        running.id, worker="w", progress=Progress(fraction=0.42, stage="pgd eps=0.3"), lease_seconds=60
    )
    html = api.client.get(f"/ui/jobs/{running.id}").text
    assert 'value="42"' in html and "pgd eps=0.3" in html
    assert f'data-poll-job="/ui/api/jobs/{running.id}"' in html
    assert "mdl_gone (deleted)" in html
    polled = api.client.get(f"/ui/api/jobs/{running.id}").json()
    assert polled["status"] == "running" and polled["percent"] == 42

    failed, _ = api.store.create_job(owner="local", kind="evaluation", spec={})
    api.store.claim(failed.id, worker="w", lease_seconds=60)
    api.store.finish(failed.id, worker="w", status="failed", error={"type": "X", "detail": f"bad {EVIL}"})
    html = api.client.get(f"/ui/jobs/{failed.id}").text
    assert "bad &lt;script&gt;" in html and "data-poll-job" not in html


def test_jobs_page_lists_newest_first_with_progress(api: Api) -> None:
    first = _evaluation(api)
    second, _ = api.store.create_job(owner="local", kind="training", spec={"model_id": "mdl_x"})
    html = api.client.get("/ui").text
    assert html.index(second.id) < html.index(first)
    assert 'data-poll="/ui/api/jobs"' in html and "<progress" in html
    items = api.client.get("/ui/api/jobs").json()["items"]
    assert [i["id"] for i in items] == [second.id, first]
    assert items[1]["status"] == "succeeded" and items[0]["status"] == "queued"


def test_static_files_are_served_and_nothing_else(api: Api) -> None:
    css = api.client.get("/ui/static/ui.css")
    js = api.client.get("/ui/static/ui.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "textContent" in js.text and "innerHTML" not in js.text
    assert_problem(api.client.get("/ui/static/..%2Fui.py"), 404)
    assert_problem(api.client.get("/ui/static/render.py"), 404)


def test_standalone_report_inlines_its_css_under_a_hash_policy(api: Api) -> None:
    from service.api.ui.render import render_job_page, standalone_csp
    from service.api.ui.report import page_inputs

    job_id = _evaluation(api)
    inputs = page_inputs(api.store.get_job(job_id), api.store, _artifacts(api))
    html = render_job_page(inputs, standalone=True)
    style = re.search(r"<style>(.*?)</style>", html, flags=re.S)
    assert style is not None and "<script" not in html and "/ui/static" not in html
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in standalone_csp()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_api_html_report(api: Api) -> None:
    job_id = _evaluation(api)
    write_examples(_artifacts(api), job_id)
    response = api.client.get(f"/v1/jobs/{job_id}/report?format=html")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script
    html = response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert len(_svgs(html)) == 2 and 'id="examples"' in html
    assert f'href="/v1/jobs/{job_id}/artifacts/adversarial_examples.npz"' in html

    queued, _ = api.store.create_job(owner="local", kind="evaluation", spec={})
    assert_problem(api.client.get(f"/v1/jobs/{queued.id}/report?format=html"), 409)
    other = _evaluation(api, owner="someone-else")
    assert_problem(api.client.get(f"/v1/jobs/{other}/report?format=html"), 404)


def test_login_with_keys_configured(api: Api) -> None:
    app = api.client.app
    keys = {"key-alice": "alice", "key-bob": "bob"}
    app.state.key_resolver = keys.get  # type: ignore[attr-defined]
    alice_job = _evaluation(api, owner="alice")
    bob_job = _evaluation(api, owner="bob")
    client = api.client

    redirect = client.get(f"/ui/jobs/{alice_job}", follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"] == f"/ui/login?next=/ui/jobs/{alice_job}"
    assert_problem(client.get("/ui/api/jobs"), 401)
    form = client.get("/ui/login?next=/ui")
    assert form.status_code == 200 and 'type="password"' in form.text

    cross_site = client.post("/ui/login", data={"key": "key-bob"}, headers={"Origin": "https://evil.example"})
    assert_problem(cross_site, 403)
    wrong = client.post("/ui/login", data={"key": "nope", "next": "/ui"}, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text
    ok = client.post(
        "/ui/login", data={"key": "key-alice", "next": "//evil.example/"}, follow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/ui"  # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "parry_key=key-alice" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie

    page = client.get("/ui")
    assert page.status_code == 200 and alice_job in page.text and bob_job not in page.text
    assert "Log out" in page.text
    assert_problem(client.get(f"/ui/jobs/{bob_job}"), 404)
    # The Bearer header works too (curl, the CLI).
    bearer = client.get(f"/ui/api/jobs/{bob_job}", headers={"Authorization": "Bearer key-bob"})
    assert bearer.status_code == 200

    out = client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303 and 'parry_key=""' in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_env_keys_and_a_key_created_while_running_close_the_ui(tmp_path: Path) -> None:
    from service.auth import hash_key

    key = "pk_ui-test-key-0123456789"
    with make_api(tmp_path / "env", api_keys=key) as api:
        assert api.client.get("/ui", follow_redirects=False).status_code == 303
        api.client.post("/ui/login", data={"key": key}, follow_redirects=False)
        assert api.client.get("/ui").status_code == 200
        # The page and the API agree on who the key's owner is.
        job_id = _evaluation(api, owner=api.client.app.state.keyring.owner_of(key))  # type: ignore[attr-defined]
        assert api.client.get(f"/ui/jobs/{job_id}").status_code == 200
    with make_api(tmp_path / "later") as api:
        assert api.client.get("/ui").status_code == 200  # open: no key anywhere
        api.store.add_api_key(name="ci", key_sha256=hash_key(key))
        assert api.client.get("/ui", follow_redirects=False).status_code == 303
        assert_problem(api.client.get("/ui/api/jobs"), 401)


def test_open_mode_needs_no_login(api: Api) -> None:
    assert api.client.get("/ui").status_code == 200
    login = api.client.get("/ui/login?next=/ui/jobs/x", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/ui/jobs/x"


def test_the_page_quotes_the_autoattack_worst_case_and_shows_its_stages(api: Api) -> None:
    result = evaluation_result()
    stage = {
        "name": "apgd-ce-100", "spec": {"name": "apgd-ce"}, "num_attacked": 90, "robust_accuracy": 0.2,
        "broken": 70, "seconds": 1.25, "cost": result["cost"],
    }  # fmt: skip
    spec = {"name": "autoattack", "version": "standard"}
    auto = {**result["attacks"][-1], "name": "autoattack", "spec": spec, "robust_accuracy": 0.0,
            "stages": [stage], "cumulative": True}  # fmt: skip
    html = api.client.get(f"/ui/jobs/{_evaluation(api, attacks=[*result['attacks'], auto])}").text
    assert "robust accuracy, linf eps=0.3 (autoattack worst case)" in html
    assert "autoattack linf standard (cumulative)" in html and "↳ after apgd-ce-100 (90 attacked)" in html
    assert "attacked only the samples that survived the next smaller eps" in html
    assert "not a robustness claim" not in html

    pgd_only = api.client.get(f"/ui/jobs/{_evaluation(api)}").text
    assert "(worst case of fgsm, pgd)" in pgd_only and "not a robustness claim" in pgd_only


def test_evaluation_page_draws_accuracy_against_severity_per_corruption(api: Api) -> None:
    items = [
        {"name": name, "severity": s, "accuracy": acc}
        for name, accs in (("contrast", (0.9, 0.5)), ("gaussian_noise", (0.95, 0.8)))
        for s, acc in zip((1, 5), accs, strict=True)
    ]
    corruptions = {"items": items, "mean_accuracy": 0.7875, "relative_error": 4.25, "skipped": ["saturate"]}
    html = api.client.get(f"/ui/jobs/{_evaluation(api, corruptions=corruptions)}").text
    assert "Common corruptions" in html and "78.8%" in html and "4.25×" in html
    chart = next(c for c in _svgs(html) if "common corruptions" in (c.findtext(f"{SVG}title") or "").lower())
    labels = {p.get("data-label"): p.get("points") for p in chart.findall(f"{SVG}polyline")}
    assert set(labels) == {"contrast", "gaussian_noise", "clean"}
    assert len((labels["contrast"] or "").split()) == 2  # severities 1 and 5
    assert "Not applicable to these images: saturate." in html
    assert "Common corruptions" not in api.client.get(f"/ui/jobs/{_evaluation(api)}").text
