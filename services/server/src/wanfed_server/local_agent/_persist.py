"""The agent's services on disk, so a restarted server keeps syncing what it owned.

Consul's agent persists the services registered through its API in its data
directory; without that, a restart would leave them in the catalog with
nobody running their checks or ever removing them. One JSON file, written
whole to a temporary name and renamed over the old one, so a crash leaves
either the previous file or the new one, never half of either.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import msgspec

from ._definitions import ServiceDefinition

__all__ = ["PERSIST_VERSION", "ServiceFile"]

logger = logging.getLogger(__name__)

PERSIST_VERSION: Final = 1


class _Contents(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    services: list[ServiceDefinition]


class ServiceFile:
    """Reads and atomically rewrites one services file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[ServiceDefinition]:
        """The saved services; an unreadable file is logged and set aside, never fatal."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            contents = msgspec.json.decode(raw, type=_Contents)
            if contents.version != PERSIST_VERSION:
                raise ValueError(f"format version {contents.version}, expected {PERSIST_VERSION}")
        except (msgspec.DecodeError, ValueError) as error:
            aside = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, aside)
            logger.warning(
                "agent services file unreadable path=%s error=%s; moved to %s, starting empty",
                self.path,
                error,
                aside,
            )
            return []
        return contents.services

    def save(self, services: list[ServiceDefinition]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = msgspec.json.encode(_Contents(version=PERSIST_VERSION, services=services))
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
