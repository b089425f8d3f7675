"""Which callback URLs the service may POST to: an SSRF guard shared by gateway and worker.

By default a callback may only reach public addresses: loopback, private, link-local (cloud
metadata at 169.254.169.254 included), shared, multicast, reserved and unspecified addresses
are refused. The operator widens that with `callback_allowed_networks` (e.g. a receiver at
10.1.2.3) and narrows it with `callback_allowed_hosts`. The gateway refuses what it can see
in the URL; the worker resolves the host when it sends, checks every address, and connects
to the address it checked, so a DNS answer that changes in between (rebinding) cannot
redirect the POST.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names that always mean this machine or a cloud's metadata service, whatever DNS says.
FORBIDDEN_HOST_NAMES = ("localhost", "metadata.google.internal", "metadata")


class ForbiddenCallback(Exception):
    """A callback URL the service will not send to; never worth retrying."""


@dataclass(frozen=True)
class CallbackTarget:
    """Where to connect for a checked callback URL: the URL's host and the checked address."""

    host: str
    port: int
    address: IPAddress


def _host_allowed(host: str, settings: Settings) -> bool:
    if not settings.callback_allowed_hosts:
        return True
    for pattern in settings.callback_allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def check_address(address: IPAddress, settings: Settings) -> None:
    """Refuse an address that is not public, unless an allowed network holds it."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in settings.callback_allowed_networks):
        return
    if not address.is_global or address.is_multicast:
        raise ForbiddenCallback(
            f"callback address {address} is not public (loopback, private, link-local, "
            f"metadata or reserved); an operator can allow it with "
            f"TRUSTDIFF_CALLBACK_ALLOWED_NETWORKS"
        )


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_callback_url(url: str, settings: Settings) -> str:
    """The URL's host after the checks that need no DNS; raises `ForbiddenCallback`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise ForbiddenCallback("a callback URL must be http(s) with a host")
    if not _host_allowed(host, settings):
        raise ForbiddenCallback(
            f"callback host {host!r} is not in TRUSTDIFF_CALLBACK_ALLOWED_HOSTS"
        )
    address = _literal_address(host)
    if address is not None:
        check_address(address, settings)
    elif host in FORBIDDEN_HOST_NAMES or host.endswith(".localhost"):
        allowed_by_name = host in (name.lower() for name in settings.callback_allowed_hosts)
        if not allowed_by_name:
            raise ForbiddenCallback(
                f"callback host {host!r} names this machine or a metadata service"
            )
    return host


def resolve_callback_target(url: str, settings: Settings) -> CallbackTarget:
    """Check `url`, resolve its host and check every address it resolves to.

    All addresses must pass, not just the first: a name that also resolves to 127.0.0.1 is
    refused even when a public address is listed first.
    """
    host = check_callback_url(url, settings)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ForbiddenCallback(f"callback host {host!r} does not resolve: {error}") from error
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise ForbiddenCallback(f"callback host {host!r} has no address")
    for address in addresses:
        check_address(address, settings)
    return CallbackTarget(host=host, port=port, address=addresses[0])
