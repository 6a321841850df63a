"""Errors raised by the gossip layer.

Decoders of untrusted bytes raise only :class:`GossipDecodeError` (or its
subclass :class:`IncompleteMessage`), so a transport adapter can catch one
type, log the peer and drop the packet without guessing what else may escape.
"""

from __future__ import annotations

__all__ = ["GossipConfigError", "GossipDecodeError", "GossipError", "IncompleteMessage"]


class GossipError(Exception):
    """Base class of everything the gossip layer raises on purpose."""


class GossipDecodeError(GossipError):
    """A peer sent bytes that are not a valid memberlist message."""


class IncompleteMessage(GossipDecodeError):
    """The bytes so far are a valid prefix; a stream reader should wait for more."""


class GossipConfigError(GossipError, ValueError):
    """The local gossip configuration is invalid (bad key, bad timing, bad name)."""
