"""Which callback URLs a job may name: http(s) to public addresses, so the worker is no proxy inward.

The worker POSTs a finished job to its `callback_url`. Without a check, a user could point it at the
operator's internal services (a metadata endpoint at 169.254.169.254, a database admin page on
localhost): server-side request forgery. The host is resolved when the job is submitted and again when
the worker delivers, and every address it resolves to must be public, unless the operator sets
`PARRY_CALLBACK_ALLOW_PRIVATE` (a trusted network, or tests on loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from service.errors import IncompatibleSpec

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackURLRefused(IncompatibleSpec):
    title = "Callback URL refused"


def is_public(address: IPAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved and unspecified addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Raise `CallbackURLRefused` (a 422) with a sentence unless `url` may receive callbacks."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused(f"callback_url must be an http or https URL with a host, not {url!r}")
    if parts.username or parts.password:
        raise _refused("callback_url must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _refused(f"callback_url has an invalid port: {url!r}") from exc
    if allow_private:
        return
    try:
        addresses = resolve(parts.hostname, port)
    except (OSError, UnicodeError) as exc:
        raise _refused(f"the host of callback_url, {parts.hostname!r}, does not resolve") from exc
    private = [str(a) for a in addresses if not is_public(a)]
    if private:
        raise _refused(
            f"callback_url's host {parts.hostname!r} resolves to a loopback, private or link-local "
            f"address ({private[0]}); callbacks go to public addresses only"
        )


def _refused(detail: str) -> CallbackURLRefused:
    return CallbackURLRefused(detail, errors=[{"loc": ["body", "callback_url"], "msg": detail}])
