"""/metrics as Prometheus parses it: the same families, types and labels as ever, and nothing more."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.api.metrics import BUCKETS, Metrics


def _families(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    return {
        f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def test_the_exposition_parses_into_the_families_it_always_had() -> None:
    metrics = Metrics()
    metrics.observe("GET", "/v1/jobs/{job_id}", 200, 0.003)
    metrics.observe("GET", "/v1/jobs/{job_id}", 200, 0.7)
    metrics.observe("POST", '/v1/"odd"\\path', 422, 12.0)
    text = metrics.render(jobs_by_status={"queued": 2, "running": 0}, queue_depth=5)
    families = _families(text)
    assert {name: kind for name, (kind, _) in families.items()} == {
        "parry_http_requests": "counter",
        "parry_http_request_duration_seconds": "histogram",
        "parry_jobs": "gauge",
        "parry_queue_depth": "gauge",
        "parry_store_up": "gauge",
        "parry_broker_up": "gauge",
    }
    assert "_created" not in text  # the library's creation-time series would be new names
    requests = families["parry_http_requests"][1]
    assert (
        "parry_http_requests_total",
        {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"},
        2,
    ) in (requests)
    assert (
        "parry_http_requests_total",
        {"method": "POST", "route": '/v1/"odd"\\path', "status": "422"},
        1,
    ) in (requests)
    latency = families["parry_http_request_duration_seconds"][1]
    get = {s[1].get("le", s[0]): s[2] for s in latency if s[1]["method"] == "GET"}
    # Bounds as they were always written (le="1", not "1.0"), cumulative, and +Inf equal to the count.
    assert [b for b in get if b[0].isdigit()] == [f"{b:g}" for b in BUCKETS]
    assert get["0.005"] == 1 and get["1"] == 2 and get["+Inf"] == 2
    assert get["parry_http_request_duration_seconds_count"] == 2
    assert abs(get["parry_http_request_duration_seconds_sum"] - 0.703) < 1e-9
    assert families["parry_jobs"][1] == [
        ("parry_jobs", {"status": "queued"}, 2),
        ("parry_jobs", {"status": "running"}, 0),
    ]
    assert families["parry_queue_depth"][1] == [("parry_queue_depth", {}, 5)]
    assert families["parry_store_up"][1][0][2] == families["parry_broker_up"][1][0][2] == 1


def test_what_did_not_answer_the_scrape_is_left_out_and_said_down() -> None:
    families = _families(Metrics().render(jobs_by_status=None, queue_depth=None))
    assert set(families) == {"parry_http_requests", "parry_http_request_duration_seconds", "parry_store_up",
                             "parry_broker_up"}  # fmt: skip
    assert families["parry_store_up"][1][0][2] == families["parry_broker_up"][1][0][2] == 0
