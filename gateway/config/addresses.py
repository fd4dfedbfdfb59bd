"""Parsing of the address-like settings: allowed hosts, CORS origins, trusted proxies.

Pure functions, each turning what an operator wrote (in code or a GATEWAY_* variable, whose name
`name` carries for the message) into the canonical form the HTTP policy compares against, or a
`ConfigError` saying what was expected. Used by `gateway.config.settings` (validation) and
`gateway.config.environment` (parsing on the way in). Must never read the environment.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from gateway.errors import ConfigError

__all__ = ["parse_allowed_hosts", "parse_cors_origins", "parse_trusted_proxies"]

# A DNS name of dot-separated labels (underscores tolerated, as resolvers do).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


def parse_allowed_hosts(
    values: list[str] | tuple[str, ...], name: str = "allowed_hosts"
) -> tuple[str, ...]:
    """Host names as a Host header carries them, without a port, in lower case: a name (maybe
    "*.parent.name"), an IPv4 address, an IPv6 address (written [::1] either way), or "*"."""
    hosts = []
    for value in values:
        host = value.strip().lower().rstrip(".")
        if host == "*":
            hosts.append(host)
            continue
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address):
            hosts.append(f"[{address.compressed}]")
        elif address is not None:
            hosts.append(str(address))
        elif _HOST_NAME.fullmatch(host.removeprefix("*.")):
            hosts.append(host)
        else:
            raise ConfigError(
                f"{name}: {value!r} is not a host name like gateway.example.com, *.example.com,"
                " an IP address, or * (and carries no scheme, port or path)"
            )
    return tuple(hosts)


def parse_cors_origins(
    values: list[str] | tuple[str, ...], name: str = "cors_origins"
) -> tuple[str, ...]:
    """Origins as browsers send them (scheme://host[:port], lower case), or "*"."""
    origins = []
    for value in values:
        if value == "*":
            origins.append(value)
            continue
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise ConfigError(
                f"{name}: {value!r} is not an origin like https://app.example.com (or *)"
            )
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ConfigError(f"{name}: {value!r} is not an origin like https://app.example.com")
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(origins)


def parse_trusted_proxies(
    values: list[str] | tuple[str, ...], name: str = "trusted_proxies"
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CIDRs (or single addresses) of trusted proxies."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an IP network like 10.0.0.0/8") from None
    return tuple(networks)
