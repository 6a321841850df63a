"""Server names: the SNI a cross-DC connection carries, and WAN member names.

A mesh gateway never decrypts, so the only thing it knows about a connection
is the server name in the ClientHello. That name therefore *is* the route:
``<node>.server.<dc>.<domain>`` reaches one server, ``server.<dc>.<domain>``
any server of the DC. Building and parsing both shapes live here so the
dialer and the gateway can never disagree about them.

WAN gossip names a server ``<node>.<dc>``; :func:`split_node_name` keeps the
reference's exact (and slightly surprising) rules, because both sides of the
gossip transport must split a name the same way.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from ._errors import InvalidNameError

__all__ = [
    "DEFAULT_DOMAIN",
    "ServerName",
    "normalize_domain",
    "parse_server_sni",
    "server_sni",
    "split_node_name",
    "validate_datacenter",
    "validate_node_label",
    "wan_member_name",
]

DEFAULT_DOMAIN: Final = "consul"

_SERVER_LABEL: Final = "server"
_ANY_NODE: Final = "*"
_MAX_LABEL: Final = 63
"""DNS limits a label to 63 octets; a longer one cannot appear in a certificate SAN."""

_DATACENTER_RE: Final = re.compile(r"[a-z0-9_-]+")
_LABEL_RE: Final = re.compile(r"[a-z0-9_-]+")


class ServerName(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed server SNI: which DC, and which server (``None``: any server)."""

    datacenter: str
    node: str | None = None

    def __post_init__(self) -> None:
        # Built by hand or decoded, it must still be a name that can route.
        validate_datacenter(self.datacenter)
        if self.node is not None:
            validate_node_label(self.node)

    @property
    def any_server(self) -> bool:
        """True for ``server.<dc>.<domain>``: the gateway may pick any server."""
        return self.node is None


def normalize_domain(domain: str) -> str:
    """The domain as it appears inside names: lower case, no trailing dot.

    Agents are configured with ``consul.`` (a DNS-style absolute name) but
    names and certificates use ``consul``.
    """
    if not domain.isascii():
        raise InvalidNameError(f"domain {domain!r} is not ASCII")
    normal = domain.lower()
    if normal.endswith("."):
        normal = normal[:-1]
    if not normal:
        raise InvalidNameError(f"domain {domain!r} is empty")
    for label in normal.split("."):
        if not label:
            raise InvalidNameError(f"domain {domain!r} has an empty label")
        if len(label) > _MAX_LABEL or _LABEL_RE.fullmatch(label) is None:
            raise InvalidNameError(
                f"domain {domain!r} has an invalid label {label!r}: "
                "use letters, digits, '-' or '_', at most 63 per label"
            )
    return normal


def validate_datacenter(datacenter: str) -> str:
    """Return ``datacenter`` if it is a valid datacenter name (``[a-z0-9_-]+``)."""
    if not datacenter:
        raise InvalidNameError("datacenter name is empty")
    if len(datacenter) > _MAX_LABEL or _DATACENTER_RE.fullmatch(datacenter) is None:
        raise InvalidNameError(
            f"datacenter name {datacenter!r} is invalid: use lower-case letters, digits, "
            "'-' or '_', at most 63 characters"
        )
    return datacenter


def validate_node_label(node: str) -> str:
    """Return ``node`` if it can stand as one label of a server name.

    A dot would shift every later label (and breaks WAN gossip naming); ``/``
    separates name and address in join strings.
    """
    if not node:
        raise InvalidNameError("node name is empty")
    if len(node) > _MAX_LABEL or _LABEL_RE.fullmatch(node) is None:
        raise InvalidNameError(
            f"node name {node!r} cannot be used in a server name: use letters, digits, "
            "'-' or '_' (no dots), at most 63 characters"
        )
    return node


def server_sni(datacenter: str, domain: str, node: str | None = None) -> str:
    """The SNI that reaches ``node`` in ``datacenter`` (any server when ``node`` is falsy or ``*``).

    Names are produced in lower case: SNI matching is case-insensitive, and one
    canonical spelling keeps logs and route tables comparable.
    """
    domain = normalize_domain(domain)
    datacenter = validate_datacenter(datacenter.lower() if datacenter.isascii() else datacenter)
    if node is None or node in ("", _ANY_NODE):
        return f"{_SERVER_LABEL}.{datacenter}.{domain}"
    node = validate_node_label(node.lower() if node.isascii() else node)
    return f"{node}.{_SERVER_LABEL}.{datacenter}.{domain}"


def parse_server_sni(name: str, domain: str) -> ServerName:
    """Read a server SNI of ``domain``; anything else is :class:`InvalidNameError`.

    The gateway routes on the result, so this is strict: exactly
    ``[<node>.]server.<dc>.<domain>``, no empty labels, no trailing dot (RFC
    6066 forbids it in SNI). Case is ignored.
    """
    domain = normalize_domain(domain)
    if not name.isascii():
        # str.lower() maps some non-ASCII letters onto ASCII ones (KELVIN SIGN
        # becomes "k"), which would let a look-alike name route.
        raise InvalidNameError(f"{name!r} is not a server name: not ASCII")
    normal = name.lower()
    suffix = "." + domain
    if not normal.endswith(suffix):
        raise InvalidNameError(f"{name!r} is not a server name of domain {domain!r}")
    labels = normal[: -len(suffix)].split(".")
    if len(labels) == 2:
        node = None
        server_label, datacenter = labels
    elif len(labels) == 3:
        node, server_label, datacenter = labels
    else:
        raise InvalidNameError(f"{name!r} is not a server name: want [<node>.]server.<dc>.{domain}")
    if server_label != _SERVER_LABEL:
        raise InvalidNameError(f"{name!r} is not a server name: want [<node>.]server.<dc>.{domain}")
    try:
        validate_datacenter(datacenter)
        if node is not None:
            validate_node_label(node)
    except InvalidNameError as exc:
        raise InvalidNameError(f"{name!r} is not a valid server name: {exc}") from None
    return ServerName(datacenter=datacenter, node=node)


def split_node_name(name: str) -> tuple[str, str]:
    """Split a WAN member name ``<node>.<dc>`` into ``(node, dc)``.

    Exactly two dot-separated parts, nothing else checked: ``.bar`` gives
    ``("", "bar")``. Every member must split names identically, so this keeps
    the reference's rules rather than validating more.
    """
    parts = name.split(".")
    if len(parts) != 2:
        raise InvalidNameError(f"node name does not encode a datacenter: {name}")
    return parts[0], parts[1]


def wan_member_name(node: str, datacenter: str) -> str:
    """The WAN gossip name of server ``node`` in ``datacenter``; refuses names that would
    not split back."""
    validate_datacenter(datacenter)
    if not node:
        raise InvalidNameError("node name is empty")
    if "." in node or "/" in node:
        raise InvalidNameError(
            f"node name {node!r} cannot join the WAN: it must not contain '.' or '/'"
        )
    return f"{node}.{datacenter}"
