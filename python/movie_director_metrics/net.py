"""Which hosts are this machine: the one answer for every part of the
package that asks (the collectors refuse remote backends unless allowed,
the CLI's server warns before listening beyond loopback, LLM prices count
local servers as free, the Blender add-on blocks remote hosts while
Blender's "Allow Online Access" is off).

It lives in a module of its own, with nothing but the standard library
under it, so that each of them can ask without importing the others
(``collectors.http``, its earlier home, pulls in the HTTP client).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_hosted", "is_loopback", "is_loopback_url"]

#: Name suffixes of hosts on the user's own network (RFC 6762 ``.local``,
#: RFC 8375 ``.home.arpa``, and the ``.lan``/``.internal`` routers and
#: clouds hand out): not a hosted service.
_PRIVATE_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".intranet")

#: Names that mean this machine.  ``localhost`` and every name under it
#: (``api.localhost``) are loopback by RFC 6761 section 6.3;
#: ``localhost.localdomain`` is the loopback alias of many /etc/hosts.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an IP address, IPv6 with or without
    brackets) is this machine: ``localhost`` and names under it in any
    case, with or without the final dot, 127.0.0.0/8, ``::1`` in any
    spelling, and IPv4-mapped loopback (``::ffff:127.0.0.1``).  Anything
    else, including names that merely start with ``127.``, is not."""
    if not isinstance(host, str) or not host:
        return False
    name = host.lower().removesuffix(".")  # "localhost." is the same name, fully qualified
    labels = name.split(".")
    if name in _LOOPBACK_NAMES or (labels[-1] == "localhost" and all(labels)):
        return True
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def is_loopback_url(url: str | None) -> bool:
    """Whether ``url`` (``http://127.0.0.1:8000/v1``, or without a scheme,
    ``localhost:11434``) points at this machine, by :func:`is_loopback`
    of its host."""
    if not isinstance(url, str) or not url:
        return False
    try:
        host = urlsplit(url if "//" in url else "//" + url).hostname
    except ValueError:
        return False
    return is_loopback(host)


def is_hosted(host: str | None) -> bool:
    """Whether ``host`` looks like a hosted service on the internet rather
    than a machine of the user's own: not loopback, not a private,
    link-local, shared (Tailscale's 100.64/10) or unique-local address
    (a GPU box on the LAN or the tailnet), not a
    single-label name (``gpu-box``) or one under a private-network suffix
    (``render.local``).  Hosted backends are probed every
    ``collectors.config.HOSTED_INTERVAL_S`` by default: a probe of a paid
    API every second would be ~86 400 requests a day."""
    if not isinstance(host, str) or not host or is_loopback(host):
        return False
    name = host.lower().removesuffix(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return "." in name and not name.endswith(_PRIVATE_SUFFIXES)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global: not private, shared (100.64/10: Tailscale, carrier NAT),
    # link-local, unique-local or reserved.
    return ip.is_global
