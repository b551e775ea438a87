"""`/docs` and `/redoc` work offline: their HTML names no other host, and every asset it names is served."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.api_helpers import Api

_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")


def _references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_this_server(api: Api, page: str) -> None:
    r = api.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = _references(r.text)
    assert "/openapi.json" in r.text
    assert refs, r.text
    for ref in refs:
        assert ref.startswith("/"), f"{page} references {ref}, which is not on this server"
    assert "http://" not in r.text and "https://" not in r.text and "//fonts." not in r.text
    for ref in refs:
        if ref.startswith("/docs/assets/"):
            asset = api.client.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 500, ref


def test_swagger_ui_turns_the_validator_badge_off(api: Api) -> None:
    # The badge would send the schema to validator.swagger.io.
    assert '"validatorUrl": null' in api.client.get("/docs").text


def test_docs_assets_serve_only_the_pages_files(api: Api) -> None:
    js = api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "SwaggerUIBundle" in js.text
    for name in ("README.md", "LICENSE.redoc", "..%2Fdocs.py", "nope.js"):
        assert api.client.get(f"/docs/assets/{name}").status_code == 404


def test_the_root_redirects_to_the_ui(api: Api) -> None:
    r = api.client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/ui"


def test_docs_routes_stay_out_of_the_schema(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths)
    assert not any(p.startswith("/docs/") for p in paths)


def test_problem_details_name_no_absolute_server_path(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service.api.problems import EXCEPTION_HANDLERS
    from service.errors import InvalidUpload

    app = FastAPI(exception_handlers=EXCEPTION_HANDLERS)

    @app.get("/boom")
    def boom() -> None:
        raise InvalidUpload(f"cannot read {tmp_path}/uploads/tmp123.upload: truncated")

    detail = TestClient(app).get("/boom").json()["detail"]
    assert str(tmp_path) not in detail and "tmp123.upload: truncated" in detail
