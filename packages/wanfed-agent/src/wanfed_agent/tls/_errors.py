"""Errors of the TLS tooling."""

from __future__ import annotations

__all__ = ["TLSMaterialError"]


class TLSMaterialError(ValueError):
    """A CA, certificate or key file is missing, unreadable or inconsistent.

    The message names the file and the problem, so the CLI and the config
    loader can show it unchanged.
    """
