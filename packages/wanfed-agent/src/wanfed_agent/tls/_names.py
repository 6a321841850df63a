"""Certificate names for servers and clients of one datacenter (reference 2.3)."""

from __future__ import annotations

__all__ = ["client_name", "server_name"]


def server_name(dc: str, domain: str, node: str | None = None) -> str:
    """``<node>.server.<dc>.<domain>``, or ``server.<dc>.<domain>`` for "any server".

    An empty node or ``*`` means "any server", which is also the CN of every
    server certificate.
    """
    base = f"server.{dc}.{domain.removesuffix('.')}"
    return base if node in (None, "", "*") else f"{node}.{base}"


def client_name(dc: str, domain: str) -> str:
    return f"client.{dc}.{domain.removesuffix('.')}"
