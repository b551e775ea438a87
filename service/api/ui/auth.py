"""Who is looking at a UI page: the API key in the `parry_key` cookie (set by the login form) or in
an `Authorization: Bearer` header, resolved to its owner.

Keys are checked by the callable on `app.state.key_resolver` (key -> owner, or None for an unknown
key), which `create_app()` takes from the key ring (`service.auth`). With no key anywhere the service
is open (loopback use, see docs/api.md) and every visitor is the same owner as an unauthenticated API call,
`service.api.deps.get_owner()`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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


def csrf_token(request: Request) -> str:
    """The token the UI's forms carry: derived from the login cookie's key, so another site can neither
    read nor forge it (the cookie is HttpOnly and SameSite=Strict besides); in open mode, from a secret
    of this process."""
    secret = presented_key(request)
    if not secret:
        state = request.app.state
        secret = getattr(state, "csrf_secret", None) or secrets.token_hex(32)
        state.csrf_secret = secret
    return hmac.new(secret.encode(), b"parry-ui-form", hashlib.sha256).hexdigest()


def check_origin(request: Request) -> None:
    """Refuse a form posted from another site (login CSRF would sign the visitor in with someone's key)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this form must be posted from the Parry UI itself")


def check_form(request: Request, token: str | None) -> None:
    """Refuse a form posted from another site, or without this visitor's token: a 403 with a sentence."""
    check_origin(request)
    if not token or not hmac.compare_digest(token, csrf_token(request)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "this form has expired or was not sent by the Parry UI: reload the page",
        )
