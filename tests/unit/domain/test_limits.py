"""Job limits and callback URLs: the gradient-step cap and the SSRF guard, both checked at submission."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from service.domain.limits import evaluation_steps, training_steps
from service.domain.specs import EvaluationOptions, TrainingOptions
from service.vetting.callback_urls import CallbackURLRefused, check_callback_url, is_public
from tests.unit.api_helpers import assert_problem, make_api, ready_model


def _evaluation(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"model_id": model_id, "dataset_id": "builtin:digits:test", **extra}


def test_evaluation_steps_count_samples_eps_steps_and_restarts() -> None:
    options = EvaluationOptions.model_validate(
        {
            "attacks": [
                {"name": "fgsm", "eps": [0.1, 0.2]},
                {"name": "pgd", "eps": 0.3, "steps": 7, "restarts": 3},
            ]
        }
    )
    assert evaluation_steps(options.attacks, 100) == 100 * (2 + 7 * 3)


def test_each_attack_spec_estimates_its_own_steps() -> None:
    options = EvaluationOptions.model_validate(
        {
            "attacks": [
                {"name": "apgd-ce", "eps": [0.1, 0.2, 0.3]},
                {"name": "apgd-dlr", "eps": 0.3, "steps": 50, "restarts": 4},
            ]
        }
    )
    assert [a.gradient_steps() for a in options.attacks] == [100, 200]
    assert evaluation_steps(options.attacks, 10) == 10 * (3 * 100 + 200)


def test_training_steps_count_epochs_checks_and_evaluations() -> None:
    spec = TrainingOptions.model_validate(
        {"method": "pgd", "eps": 0.3, "steps": 10, "epochs": 2, "validation_steps": 5,
         "validation_samples": 50, "evaluate": [{"name": "pgd", "eps": 0.3, "steps": 20}]}
    )  # fmt: skip
    assert training_steps(spec, train_samples=1000, validation_samples=200) == (
        2 * (1000 * 11 + 50 * 5) + 2 * 200 * 20
    )
    fast = spec.model_copy(update={"method": "fgsm-rs", "evaluate": []})
    assert training_steps(fast, train_samples=1000, validation_samples=200) == 2 * (1000 * 2 + 50 * 5)


def test_an_evaluation_over_the_step_cap_is_422_naming_both_figures(tmp_path: Path) -> None:
    # digits:test holds 359 samples: PGD-10 on them at 2 eps is 7,180 gradient steps.
    with make_api(tmp_path, max_gradient_steps_per_job=7_000) as api:
        model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
        pgd = {"name": "pgd", "eps": [0.1, 0.2], "steps": 10}
        problem = assert_problem(
            api.client.post("/v1/evaluations", json=_evaluation(model_id, attacks=[pgd])), 422
        )
        assert "7,180 gradient steps" in str(problem["detail"]) and "7,000" in str(problem["detail"])
        ok = _evaluation(model_id, attacks=[pgd], max_samples=300)
        assert api.client.post("/v1/evaluations", json=ok).status_code == 202


def test_a_training_over_the_step_cap_is_422(tmp_path: Path) -> None:
    with make_api(tmp_path, max_gradient_steps_per_job=100_000) as api:
        model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
        spec = {"model_id": model_id, "dataset_id": "builtin:digits:train", "method": "pgd", "eps": 0.1}
        problem = assert_problem(api.client.post("/v1/trainings", json=spec), 422)
        assert "gradient steps" in str(problem["detail"]) and "100,000" in str(problem["detail"])
        small = {**spec, "epochs": 1, "steps": 2, "validation_samples": 10}
        assert api.client.post("/v1/trainings", json=small).status_code == 202, "a small training fits"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.0.9/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "file:///etc/passwd",
        "gopher://9.9.9.9/",
        "http:///nohost",
        "http://user:pw@9.9.9.9/",
        "http://no-such-host.invalid/",
    ],
)
def test_private_and_odd_callback_urls_are_refused(url: str) -> None:
    with pytest.raises(CallbackURLRefused) as info:
        check_callback_url(url, allow_private=False)
    assert "\n" not in str(info.value)


def test_public_callback_urls_pass_and_the_setting_allows_private_ones() -> None:
    check_callback_url("https://9.9.9.9/hook", allow_private=False)
    check_callback_url("http://[2620:fe::fe]:8080/hook", allow_private=False)
    check_callback_url("http://127.0.0.1:8000/hook", allow_private=True)
    with pytest.raises(CallbackURLRefused):
        check_callback_url("ftp://127.0.0.1/", allow_private=True)  # the scheme is checked regardless
    assert not is_public(ipaddress.ip_address("100.64.0.1"))  # carrier-grade NAT is not public either


def test_the_api_refuses_a_private_callback_url_with_422_on_the_field(tmp_path: Path) -> None:
    with make_api(tmp_path) as api:
        model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
        spec = _evaluation(
            model_id, attacks=[{"name": "fgsm", "eps": 0.1}], callback_url="http://127.0.0.1:9/x"
        )
        problem = assert_problem(api.client.post("/v1/evaluations", json=spec), 422)
        assert "loopback, private or link-local" in str(problem["detail"])
        assert problem["errors"][0]["loc"] == ["body", "callback_url"]  # type: ignore[index]
        training = {"model_id": model_id, "dataset_id": "builtin:digits:train", "method": "fgsm-rs",
                    "eps": 0.1, "epochs": 1, "callback_url": "http://10.0.0.1/x"}  # fmt: skip
        assert_problem(api.client.post("/v1/trainings", json=training), 422)
    with make_api(tmp_path / "open", callback_allow_private=True) as api:
        model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
        assert api.client.post("/v1/evaluations", json=spec | {"model_id": model_id}).status_code == 202


def test_the_worker_checks_the_callback_url_again_before_posting(tmp_path: Path) -> None:
    import httpx

    from service.store.jobs import JobStore
    from workers.runtime.callbacks import deliver

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_schema()
    job, _ = store.create_job(owner="k", kind="evaluation", spec={"callback_url": "http://127.0.0.1:9/x"})
    posted: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: posted.append(r) or httpx.Response(204)))
    assert deliver(store, job.id, client=client, allow_private=False) is False  # refused, not retried
    assert posted == []
    assert deliver(store, job.id, client=client, allow_private=True) is True
    assert len(posted) == 1
    store.dispose()


def test_autoattack_counts_the_passes_of_every_stage_at_every_eps(small_autoattack: Any) -> None:
    # The small "standard": APGD-CE 5 steps x 2 restarts, then APGD-DLR 5 steps.
    options = EvaluationOptions.model_validate(
        {"attacks": [{"name": "autoattack", "eps": [0.1, 0.3], "version": "standard"}]}
    )
    assert options.attacks[0].gradient_steps() == 5 * 2 + 5
    assert evaluation_steps(options.attacks, 10) == 10 * 2 * 15
