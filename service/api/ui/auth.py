"""Who is looking at a UI page: the API key in the `parry_key` cookie (set by the login form) or in
an `Authorization: Bearer` header, resolved to its owner.

Keys are checked by the callable on `app.state.key_resolver` (key -> owner, or None for an unknown
key), which `create_app()` takes from the key ring (`service.auth`). With no key anywhere the service
is open (loopback use, see docs/api.md) and every visitor is the same owner as an unauthenticated API call,
`service.api.deps.get_owner()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status

from service.api.deps import get_owner
from service.auth import bearer_token

COOKIE = "parry_key"
KeyResolver = Callable[[str], str | None]


def key_resolver(request: Request) -> KeyResolver | None:
    """The configured key check, or None when the service runs without keys (open mode)."""
    state = request.app.state
    resolver: KeyResolver | None = getattr(state, "key_resolver", None)
    keyring = getattr(state, "keyring", None)
    if resolver is None and keyring is not None:
        # A key created while the server runs closes the UI at once, as it closes the API.
        resolver = keyring.resolver()
        state.key_resolver = resolver
    return resolver


def presented_key(request: Request) -> str | None:
    return bearer_token(request.headers.get("authorization", "")) or request.cookies.get(COOKIE) or None


def resolve_owner(request: Request, resolver: KeyResolver | None) -> str | None:
    """The owner of the presented key (the open-mode owner without keys), None for no or an unknown key."""
    if resolver is None:
        return get_owner()
    key = presented_key(request)
    return resolver(key) if key else None


def ui_owner(request: Request, resolver: Annotated[KeyResolver | None, Depends(key_resolver)]) -> str:
    """The owner whose jobs a page shows; without a valid key, a redirect to the login form."""
    owner = resolve_owner(request, resolver)
    if owner is None:
        raise HTTPException(
            status.HTTP_303_SEE_OTHER, "log in first", headers={"Location": login_url(request)}
        )
    return owner


def ui_api_owner(request: Request, resolver: Annotated[KeyResolver | None, Depends(key_resolver)]) -> str:
    """The same owner for the pages' JSON polling; without a valid key, a 401 problem."""
    owner = resolve_owner(request, resolver)
    if owner is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is needed: log in at /ui/login or send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return owner


def safe_next(path: str | None) -> str:
    """A redirect target that stays inside the UI (no open redirect to another site)."""
    if not path or not path.startswith("/ui") or path.startswith("//") or "\\" in path:
        return "/ui"
    return path


def login_url(request: Request) -> str:
    return f"/ui/login?next={quote(safe_next(request.url.path), safe='/')}"


UiOwnerDep = Annotated[str, Depends(ui_owner)]
UiApiOwnerDep = Annotated[str, Depends(ui_api_owner)]
