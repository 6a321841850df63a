"""Discovery providers: where the addresses of the primary's gateways come from.

A ``primary_gateways`` entry is either a literal ``host:port`` (a DNS name
stays a name and is resolved at every dial) or ``provider=<name> key=value
...``, resolved by the plugin registered under that name in the entry-point
group ``wanfed.discover``. Two ship with wanfed:

* ``provider=dns name=gateways.dc1.example port=8443 [type=A|AAAA|SRV]
  [nameserver=IP[:port]]``: A/AAAA records give hosts (with ``port``); SRV
  records give hosts and ports;
* ``provider=file path=/etc/wanfed/primary-gateways.txt``: one address per
  line, ``#`` comments; the file is re-read on every attempt, so an operator
  (or a config-management tool) can replace the list without a restart.

A provider returns ``host:port`` strings; an empty list means "nothing found
yet" and the caller retries later.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Final, Protocol

from wanfed_fsm import format_host_port

__all__ = [
    "DISCOVERY_ENTRY_POINT_GROUP",
    "DiscoveryError",
    "DiscoveryProvider",
    "DnsProvider",
    "FileProvider",
    "ProviderEntry",
    "load_provider",
    "parse_provider_entry",
]

DISCOVERY_ENTRY_POINT_GROUP: Final = "wanfed.discover"
DEFAULT_GATEWAY_PORT: Final = 8443


class DiscoveryError(Exception):
    """A discovery entry that cannot work as written, or a provider that failed."""


class DiscoveryProvider(Protocol):
    """A plugin: ``addresses(args)`` returns ``host:port`` strings (maybe none yet)."""

    async def addresses(self, args: Mapping[str, str]) -> list[str]: ...


class ProviderEntry:
    """One parsed ``provider=<name> key=value ...`` entry."""

    __slots__ = ("args", "name", "text")

    def __init__(self, name: str, args: dict[str, str], text: str) -> None:
        self.name = name
        self.args = args
        self.text = text

    def __repr__(self) -> str:
        return f"ProviderEntry({self.text!r})"


def parse_provider_entry(entry: str) -> ProviderEntry | None:
    """``None`` for a literal address; a :class:`ProviderEntry` for ``provider=...``."""
    if "provider=" not in entry:
        return None
    try:
        words = shlex.split(entry)
    except ValueError as exc:
        raise DiscoveryError(f"cannot parse discovery entry {entry!r}: {exc}") from None
    args: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DiscoveryError(
                f"discovery entry {entry!r}: expected key=value pairs, got {word!r}"
            )
        if key in args:
            raise DiscoveryError(f"discovery entry {entry!r}: {key!r} given twice")
        args[key] = value
    name = args.pop("provider")
    if not name:
        raise DiscoveryError(f"discovery entry {entry!r}: empty provider name")
    return ProviderEntry(name, args, entry)


def _installed() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=DISCOVERY_ENTRY_POINT_GROUP)}


def load_provider(name: str) -> DiscoveryProvider:
    """Instantiate the provider plugin registered as ``name``."""
    found = entry_points(group=DISCOVERY_ENTRY_POINT_GROUP, name=name)
    if not found:
        known = ", ".join(sorted(_installed())) or "none"
        raise DiscoveryError(f"unknown discovery provider {name!r}; installed providers: {known}")
    (entry_point,) = tuple(found)[:1]
    factory = entry_point.load()
    provider: DiscoveryProvider = factory()
    return provider


def _port(args: Mapping[str, str], provider: str) -> int:
    text = args.get("port", str(DEFAULT_GATEWAY_PORT))
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DiscoveryError(f"provider={provider}: port must be 1-65535, got {text!r}")
    return int(text)


class DnsProvider:
    """A/AAAA or SRV records of one name."""

    async def addresses(self, args: Mapping[str, str]) -> list[str]:
        # dnspython is imported here, by the one provider that needs it: every
        # agent start would otherwise pay for it.
        import dns.asyncresolver
        import dns.exception
        import dns.rdatatype
        import dns.resolver

        name = args.get("name", "")
        if not name:
            raise DiscoveryError("provider=dns needs name=<dns name>")
        record_type = args.get("type", "A").upper()
        if record_type not in ("A", "AAAA", "SRV"):
            raise DiscoveryError(f"provider=dns: type must be A, AAAA or SRV, got {record_type!r}")
        port = _port(args, "dns") if record_type != "SRV" else 0
        resolver = dns.asyncresolver.Resolver(configure="nameserver" not in args)
        if "nameserver" in args:
            host, _, ns_port = args["nameserver"].rpartition(":")
            if not host:
                host, ns_port = ns_port, "53"
            resolver.nameservers = [host]
            resolver.port = int(ns_port)
        resolver.lifetime = float(args.get("timeout", "5"))
        try:
            answer = await resolver.resolve(name, record_type)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"provider=dns: looking up {name} {record_type}: {exc}") from exc
        found: list[str] = []
        for record in answer:
            if record.rdtype == dns.rdatatype.SRV:
                target = str(record.target).rstrip(".")
                found.append(format_host_port(target, int(record.port)))
            else:
                found.append(format_host_port(record.to_text(), port))
        return sorted(found)


class FileProvider:
    """Addresses listed in a file, re-read on every attempt."""

    async def addresses(self, args: Mapping[str, str]) -> list[str]:
        path_text = args.get("path", "")
        if not path_text:
            raise DiscoveryError("provider=file needs path=<file>")
        path = Path(path_text)
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DiscoveryError(f"provider=file: cannot read {path}: {exc}") from exc
        default_port = _port(args, "file")
        found: list[str] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            found.append(_normalise(line, default_port, f"{path}:{number}"))
        return found


def _normalise(entry: str, default_port: int, where: str) -> str:
    """``host`` or ``host:port`` (``[v6]:port``) → ``host:port``."""
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise DiscoveryError(f"{where}: malformed address {entry!r}")
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:
        host, port_text = entry, ""
    if not host:
        raise DiscoveryError(f"{where}: malformed address {entry!r}")
    if port_text and (not port_text.isdigit() or not 1 <= int(port_text) <= 65535):
        raise DiscoveryError(f"{where}: bad port in {entry!r}")
    return format_host_port(host, int(port_text) if port_text else default_port)
