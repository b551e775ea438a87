"""The exception handlers that turn every error into one `application/problem+json` shape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import Problem, ProblemItem
from service.domain.messages import without_server_paths
from service.domain.specs import AttackSpec
from service.errors import ServiceError

# The discriminator tags of the attack union ("fgsm", "pgd", ...), as pydantic puts them in error locations.
ATTACK_NAMES = frozenset(spec.model_fields["name"].default for spec in get_args(get_args(AttackSpec)[0]))

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(
    request: Request,
    *,
    status: int,
    type_: str,
    title: str,
    detail: str,
    errors: list[ProblemItem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=f"/problems/{type_}",
        title=title,
        status=status,
        detail=without_server_paths(detail),  # a library's sentence may name the upload's temporary file
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    errors = [ProblemItem(**e) for e in exc.errors] if exc.errors else None
    return problem_response(
        request, status=exc.status, type_=type(exc).__name__, title=exc.title, detail=str(exc), errors=errors
    )


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items: list[ProblemItem] = []
    seen: set[tuple[str | int, ...]] = set()
    for error in exc.errors():
        loc = _clean_loc(error["loc"])
        if tuple(loc) in seen:  # each branch of a union reports the same field once more
            continue
        seen.add(tuple(loc))
        items.append(ProblemItem(loc=loc, msg=str(error["msg"]).removeprefix("Value error, ")))
    first = items[0] if items else None
    detail = f"{'.'.join(str(p) for p in first.loc)}: {first.msg}" if first else "the request is not valid"
    if len(items) > 1:
        detail += f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''})"
    return problem_response(
        request, status=422, type_="InvalidRequest", title="Invalid request", detail=detail, errors=items
    )


def _clean_loc(loc: Sequence[Any]) -> list[str | int]:
    """Field names and indices only: pydantic also reports the union branch it tried
    (`constrained-float`, `list[...]`) and the attack tag (`pgd`), which nobody typed."""
    parts: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(part)
        elif isinstance(part, str) and part.isidentifier():
            after_index = i > 0 and isinstance(loc[i - 1], int)
            if after_index and part in ATTACK_NAMES:
                continue
            parts.append(part)
    return parts


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = (
        HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
    )
    detail: Any = exc.detail
    if not isinstance(detail, str) or detail == phrase:
        detail = _default_detail(request, exc.status_code, phrase)
    return problem_response(
        request,
        status=exc.status_code,
        type_=phrase.title().replace(" ", "").replace("-", ""),
        title=phrase,
        detail=detail,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _default_detail(request: Request, status: int, phrase: str) -> str:
    if status == 404:
        return f"there is no resource at {request.url.path}"
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}"
    return phrase


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        status=500,
        type_="InternalError",
        title="Internal error",
        detail="the server failed to handle this request; it has been logged, please try again later",
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ServiceError: service_error,
    RequestValidationError: invalid_request,
    StarletteHTTPException: http_error,
    Exception: unexpected_error,
}


def problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's `openapi()` with every error answer documented as `application/problem+json`.

    FastAPI documents error responses as `application/json` (and its own 422 body); Parry answers every
    error as a Problem. Each operation also gets a `default` response, so a status the route does not
    list (a 401, a 413, a 400 from a proxy) is still documented, with its body. The bearer key is
    documented as optional (`{}` among the alternatives): a server with no key configured takes none,
    one with keys answers a request without one with a documented 401.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Problem, ProblemItem):
                schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    for code, response in responses.items():
                        if code[0] in "45":
                            response["content"] = problem
                    responses["default"] = {"description": "A problem (RFC 9457).", "content": problem}
                    if operation.get("security") and {} not in operation["security"]:
                        operation["security"] = [*operation["security"], {}]
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
