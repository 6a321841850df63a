"""The one error type configuration loading raises."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """The agent configuration is invalid; nothing may start.

    One exception type for every configuration problem keeps the CLI simple: it
    prints ``str(error)`` and exits 1. ``source`` (a file path, ``"command
    line"``, or ``None`` for rules that span sources) and ``key`` (a dotted path
    such as ``connect.enable_mesh_gateway_wan_federation``) are kept separately
    so callers and tests can inspect them without parsing the message.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.key = key
