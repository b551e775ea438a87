"""The UI's actions through TestClient: upload a model and a dataset, submit an evaluation from a preset,
cancel a job; each refused without the page's CSRF token or from another origin, and shown again with the
sentence when the API's rules refuse it. The real browser drives them in tests/browser/test_ui_actions.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from service.domain import tasks as broker
from tests.unit.api_helpers import Api, make_api, npz_bytes, ready_model, saved_model_zip


def _token(api: Api) -> str:
    page = api.client.get("/ui/new")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found is not None
    return found[1]


def test_the_forms_page_lists_presets_models_and_datasets(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    page = api.client.get("/ui/new").text
    for preset in ("quick", "standard", "thorough"):
        assert f'id="preset-{preset}"' in page
    assert model_id in page and "builtin:digits:test" in page
    assert page.count('name="csrf"') == 3
    assert '<label for="model_id">' in page and '<label for="dataset-file">' in page  # every control labelled


def test_an_evaluation_from_a_preset_is_queued_and_opens_its_page(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    form = {"csrf": _token(api), "model_id": model_id, "dataset_id": "builtin:digits:test",
            "preset": "quick", "input_low": "0", "input_high": "255", "max_samples": "50"}  # fmt: skip
    answer = api.client.post("/ui/evaluations", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    job_id = answer.headers["location"].rsplit("/", 1)[-1]
    job = api.store.get_job(job_id, owner="local")
    assert job.spec["input_range"] == [0.0, 255.0] and job.spec["max_samples"] == 50
    assert job.spec["attacks"][0]["name"] == "fgsm"
    assert job.spec["attacks"][0]["eps"] == [25.5, 51.0, 76.5]  # the preset's eps, in the model's scale
    assert (broker.RUN_EVALUATION, [job_id]) in api.enqueuer.sent


def test_a_refused_evaluation_shows_the_form_again_with_the_sentence(api: Api) -> None:
    form = {
        "csrf": _token(api),
        "model_id": "mdl_nope",
        "dataset_id": "builtin:digits:test",
        "preset": "quick",
    }
    answer = api.client.post("/ui/evaluations", data=form)
    assert answer.status_code == 404 and 'id="form-error"' in answer.text
    assert "model &#39;mdl_nope&#39; does not exist" in answer.text
    bad = api.client.post("/ui/evaluations", data={**form, "model_id": "m", "input_low": "x"})
    assert bad.status_code == 422 and "must be numbers" in bad.text


def test_forms_without_the_token_or_from_another_site_are_refused(api: Api) -> None:
    job, _ = api.store.create_job(owner="local", kind="evaluation", spec={})
    token = _token(api)
    assert api.client.post(f"/ui/jobs/{job.id}/cancel", data={}).status_code == 403
    assert api.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": "0" * 64}).status_code == 403
    evil = {"Origin": "https://evil.example"}
    assert api.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": token}, headers=evil).status_code == 403
    upload = api.client.post("/ui/models", files={"file": ("m.zip", saved_model_zip())}, data={})
    assert upload.status_code == 403 and api.store.list_models("local") == []
    assert api.store.get_job(job.id).status == "queued"


def test_uploads_and_cancel_go_through_the_api_rules(api: Api) -> None:
    token = _token(api)
    model = api.client.post(
        "/ui/models",
        files={"file": ("cnn.zip", saved_model_zip())},
        data={"csrf": token},
        follow_redirects=False,
    )
    assert model.status_code == 303 and "model%20cnn" in model.headers["location"]
    [record] = api.store.list_models("local")
    assert (broker.VALIDATE_MODEL, [record.id]) in api.enqueuer.sent
    data = npz_bytes(x=np.zeros((3, 2), np.float32), y=np.array([0, 1, 2]))
    dataset = api.client.post("/ui/datasets", files={"file": ("d.npz", data)}, data={"csrf": token})
    assert dataset.status_code == 200 and 'id="form-notice"' in dataset.text and "dataset d" in dataset.text
    refused = api.client.post("/ui/datasets", files={"file": ("d.npz", b"not a zip")}, data={"csrf": token})
    assert refused.status_code == 422 and "not a readable .npz" in refused.text
    job, _ = api.store.create_job(owner="local", kind="evaluation", spec={})
    assert 'id="cancel"' in api.client.get(f"/ui/jobs/{job.id}").text
    cancelled = api.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert cancelled.status_code == 303 and api.store.get_job(job.id).status == "cancelled"
    assert 'id="cancel"' not in api.client.get(f"/ui/jobs/{job.id}").text


def test_the_token_follows_the_login_key(tmp_path: Path) -> None:
    key = "pk_ui-actions-key-0123456789"
    with make_api(tmp_path, api_keys=key) as api:
        assert api.client.get("/ui/new", follow_redirects=False).status_code == 303
        api.client.post("/ui/login", data={"key": key}, follow_redirects=False)
        token = _token(api)
        owner = api.client.app.state.keyring.owner_of(key)  # type: ignore[attr-defined]
        job, _ = api.store.create_job(owner=owner, kind="evaluation", spec={})
        other, _ = api.store.create_job(owner="someone-else", kind="evaluation", spec={})
        assert api.client.post(f"/ui/jobs/{other.id}/cancel", data={"csrf": token}).status_code == 404
        answer = api.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": token}, follow_redirects=False)
        assert answer.status_code == 303 and api.store.get_job(job.id).status == "cancelled"
        api.client.cookies.clear()
        again = api.client.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": token}, follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"].startswith("/ui/login")
