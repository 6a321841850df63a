"""Certificate names for clients of one datacenter (reference 2.3).

A server's names are its SNI names, built by :func:`wanfed_proto.server_sni`
(one builder for the name a dial asks for and the name a certificate holds).
"""

from __future__ import annotations

__all__ = ["client_name"]


def client_name(dc: str, domain: str) -> str:
    return f"client.{dc}.{domain.removesuffix('.')}"
