"""Parsers for single configuration values.

Each parser takes what a file or flag supplied and returns the typed value, or
raises ``ValueError`` whose text starts with ``expected ...`` so the loader can
prefix it with the source and key. They hold no state and do no I/O, so the
same rules apply to files, flags and programmatic overrides.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

__all__ = [
    "DEFAULT_SERVER_PORT",
    "ENCRYPT_KEY_SIZES",
    "LOG_LEVELS",
    "MAX_DURATION",
    "describe",
    "normalise_domain",
    "parse_acl_default_policy",
    "parse_acl_down_policy",
    "parse_acl_token",
    "parse_advertise_ip",
    "parse_bool",
    "parse_bootstrap_expect",
    "parse_datacenter",
    "parse_duration",
    "parse_encrypt_key",
    "parse_host_port",
    "parse_int",
    "parse_ip",
    "parse_log_level",
    "parse_node_name",
    "parse_non_negative_int",
    "parse_port",
    "parse_positive_duration",
    "parse_primary_gateway",
    "parse_retry_join",
    "parse_str",
]

DEFAULT_SERVER_PORT = 8300
"""Port assumed for a ``retry_join`` entry that names only a host."""

ENCRYPT_KEY_SIZES = (16, 24, 32)
"""AES-128/192/256 key sizes, the ones memberlist accepts for ``encrypt``."""

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DATACENTER = re.compile(r"[a-z0-9_-]+")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def describe(value: object) -> str:
    """Show a rejected value with its type, so "got 8500 (a string)" is obvious."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kind = kinds.get(type(value))
    if kind is None:
        kind = "a list" if isinstance(value, list | tuple) else "an object"
        if isinstance(value, dict):
            return kind
    return f"{value!r} ({kind})"


def parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    return value


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected a boolean (true or false), got {describe(value)}")


def parse_int(value: object) -> int:
    # bool is an int subclass in Python; `server = 1` style mistakes stay errors.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {describe(value)}")


def parse_port(value: object) -> int:
    """A TCP/UDP port; 0 lets the operating system pick one (useful in tests)."""
    try:
        port = parse_int(value)
    except ValueError:
        raise ValueError(f"expected a port number 0-65535, got {describe(value)}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"expected a port number 0-65535, got {port}")
    return port


MAX_DURATION = (2**63 - 1) / 1e9
"""Go's longest duration (about 292 years) in seconds: longer ones are refused, as
Go's parser refuses them, instead of becoming an infinite timer or a float overflow."""


def parse_duration(value: object) -> float:
    """Go-style durations (``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``) as seconds.

    Strings only, as in Consul: a bare number is ambiguous (seconds? ns?) and
    is rejected rather than guessed.
    """
    expected = 'expected a duration such as "30s", "5m" or "1h30m"'
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {describe(value)}")
    text = value.strip()
    if text == "0":
        return 0.0
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        raise ValueError(f"{expected}, got {value!r}")
    if not total <= MAX_DURATION:  # also inf, from a number too long for a float
        raise ValueError(f"duration out of range (at most {MAX_DURATION:.0f}s), got {value!r}")
    return total


def parse_positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than zero, got {value!r}")
    return seconds


def parse_datacenter(value: object) -> str:
    name = parse_str(value)
    if not _DATACENTER.fullmatch(name):
        raise ValueError(
            f"expected a datacenter name of lowercase letters, digits, '-' and '_', got {name!r}"
        )
    return name


def parse_node_name(value: object) -> str:
    """Non-empty; the ``/`` rule is checked after merging (its message depends on wanfed)."""
    name = parse_str(value)
    if not name:
        raise ValueError("expected a non-empty node name")
    return name


def normalise_domain(value: object) -> str:
    """Lower-case DNS name without the trailing dot, as it appears inside SNI names."""
    domain = parse_str(value).strip().lower().removesuffix(".")
    labels = domain.split(".")
    if not domain or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"expected a DNS domain such as 'consul', got {value!r}")
    return domain


def parse_ip(value: object) -> str:
    text = parse_str(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None


def parse_advertise_ip(value: object) -> str:
    """An address peers dial: a wildcard like ``0.0.0.0`` would send them nowhere."""
    text = parse_ip(value)
    if ipaddress.ip_address(text).is_unspecified:
        raise ValueError(f"expected an address peers can reach, got the wildcard {text!r}")
    return text


def parse_host_port(entry: str, default_port: int | None) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address.

    ``default_port=None`` makes the port mandatory.
    """
    text = entry.strip()
    host: str
    port_text: str | None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"expected host or host:port, got {entry!r}: unclosed '['")
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected host or host:port, got {entry!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host, port_text = text, None  # a bare IPv6 address
    elif ":" in text:
        host, port_text = text.split(":", 1)
    else:
        host, port_text = text, None
    if not host or any(c.isspace() or c in "/,{}" for c in host):
        raise ValueError(f"expected host or host:port, got {entry!r}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"expected host:port (the port is required), got {entry!r}")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected a port 1-65535 after ':', got {entry!r}")
    return host, int(port_text)


def parse_retry_join(value: object) -> str:
    """``host`` or ``host:port`` of a server's RPC port; cloud auto-join is not supported."""
    entry = parse_str(value).strip()
    if "provider=" in entry:
        raise ValueError(
            f"expected host or host:port, got {entry!r}: cloud auto-join ('provider=') is not "
            "supported; list server addresses or a DNS name that resolves to them"
        )
    parse_host_port(entry, DEFAULT_SERVER_PORT)
    return entry


def parse_primary_gateway(value: object) -> str:
    """A mesh gateway of the primary: literal ``host:port``, or ``provider=<name> k=v ...``.

    Provider entries are resolved later by the plugin registered under that
    name (entry-point group ``wanfed.discover``); here the entry must parse and
    the plugin must be installed, so a typo fails at start-up, not at the first
    discovery attempt. Consul's go-sockaddr templates are not supported.
    """
    from wanfed_agent.discover import DiscoveryError, load_provider, parse_provider_entry

    entry = parse_str(value).strip()
    if "{{" in entry:
        raise ValueError(f"expected host:port, got {entry!r}: address templates are not supported")
    try:
        provider = parse_provider_entry(entry)
        if provider is not None:
            load_provider(provider.name)
            return entry
    except DiscoveryError as exc:
        raise ValueError(str(exc)) from None
    parse_host_port(entry, None)
    return entry


def parse_encrypt_key(value: object) -> str:
    """Base64 of a 16, 24 or 32 byte key (what ``wanfed keygen`` prints)."""
    text = parse_str(value).strip()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "expected a base64-encoded key as printed by 'wanfed keygen', got text that is "
            "not base64"
        ) from None
    if len(key) not in ENCRYPT_KEY_SIZES:
        raise ValueError(
            f"expected a base64-encoded key of 16, 24 or 32 bytes, got {len(key)} bytes"
        )
    return text


def parse_log_level(value: object) -> str:
    level = parse_str(value).strip().lower()
    if level == "warning":
        level = "warn"
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def parse_bootstrap_expect(value: object) -> int:
    count = parse_int(value)
    if count < 1:
        raise ValueError(f"expected an integer of at least 1, got {count}")
    return count


def parse_raft_multiplier(value: object) -> int:
    multiplier = parse_int(value)
    if not 1 <= multiplier <= 10:
        raise ValueError(f"expected an integer from 1 to 10, got {multiplier}")
    return multiplier


def parse_non_negative_int(value: object) -> int:
    count = parse_int(value)
    if count < 0:
        raise ValueError(f"expected an integer of at least 0, got {count}")
    return count


ACL_DEFAULT_POLICIES = ("allow", "deny")
ACL_DOWN_POLICIES = ("extend-cache", "deny", "allow", "async-cache")
MAX_ACL_TOKEN_LENGTH = 256


def parse_acl_default_policy(value: object) -> str:
    """What a request no rule speaks about gets: ``allow`` or ``deny``."""
    return _one_of(value, ACL_DEFAULT_POLICIES)


def parse_acl_down_policy(value: object) -> str:
    """What to do with a token when the primary cannot be asked about it."""
    return _one_of(value, ACL_DOWN_POLICIES)


def _one_of(value: object, choices: tuple[str, ...]) -> str:
    text = parse_str(value)
    if text not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def parse_acl_token(value: object) -> str:
    """A token secret. The value is never repeated in a message: a typo in a config
    file must not print the secret into a log or a terminal."""
    if not isinstance(value, str):
        raise ValueError("expected a token as a string (the value is not shown)")
    if not value or len(value) > MAX_ACL_TOKEN_LENGTH:
        raise ValueError(
            f"expected a token of 1 to {MAX_ACL_TOKEN_LENGTH} characters, got {len(value)} "
            "(the value is not shown)"
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(
            "expected a token without spaces or control characters (the value is not shown)"
        )
    return value
