"""`/docs` (Swagger UI) and `/redoc` served with their assets from this package, and `/` sent to `/ui`.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and Google Fonts from other hosts, so on a machine
without internet they are blank. These pages reference only this server: the assets are vendored in
`docs_assets/` (see its README.md for the versions and licences).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from service.errors import NotFound

ASSETS_DIR = Path(__file__).resolve().parent / "docs_assets"
ASSETS_PATH = "/docs/assets"
# What the pages load; nothing else in the folder (licences, README) is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
TITLE = "Parry API"

router = APIRouter(include_in_schema=False)


@router.get("/")
def landing() -> RedirectResponse:
    """The browser's way in: the jobs page."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this server's OpenAPI schema."""
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} (Swagger UI)",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        # The default validator badge asks validator.swagger.io about the schema: another host.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc on this server's OpenAPI schema."""
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{TITLE} (ReDoc)",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_PATH + "/{name}")
def asset(name: str) -> FileResponse:
    """One vendored asset of the documentation pages."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"there is no documentation asset {name!r}")
    return FileResponse(
        ASSETS_DIR / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )


def _openapi_url(request: Request) -> str:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + (request.app.openapi_url or "/openapi.json")
