"""Building an :class:`AgentConfig` from files, directories and flags.

Order, lowest priority first: built-in defaults, the ``-dev`` preset, each
``files`` entry, each ``dirs`` entry (its ``.json``/``.hcl`` files in lexical
order), each ``hcl`` fragment (``-hcl``), then ``overrides`` (the command
line). A directory given in ``files`` is read like a ``dirs`` entry at that
position, as Consul treats ``-config-file`` and ``-config-dir`` as one ordered
list. Scalars from a later source replace earlier ones, blocks merge key by
key, and lists (``retry_join``, ``primary_gateways``, ...) are concatenated,
as Consul does. Each source is checked on its own first so that an error
names the file that holds it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from wanfed_agent.tls import TLSMaterialError

from ._errors import ConfigError
from ._files import config_dir_files, parse_hcl, read_config_file
from ._flags import flag_for_key
from ._model import AgentConfig
from ._schema import check_source
from ._validate import validate_config

__all__ = ["COMMAND_LINE", "DEV_PRESET", "load_config"]

log = logging.getLogger(__name__)

COMMAND_LINE = "command line"

DEV_PRESET: Mapping[str, Any] = {
    "server": True,
    "bootstrap": True,
    "bind_addr": "127.0.0.1",
    "client_addr": "127.0.0.1",
    "connect": {"enabled": True},
}
"""What ``-dev`` sets before files and flags (which may still override it)."""


def load_config(
    files: Sequence[Path] = (),
    dirs: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    dev: bool = False,
    hcl: Sequence[str] = (),
    check_tls_files: bool = True,
) -> AgentConfig:
    """Merge, check and return the agent configuration, or raise one :class:`ConfigError`.

    ``overrides`` is shaped like a config file (``{"ports": {"http": 0}}``) and
    reported as coming from the command line. With ``check_tls_files`` the
    TLS files named by the result are read and cross-checked too.
    """
    merged: dict[str, Any] = {}
    if dev:
        _merge(merged, check_source(DEV_PRESET, "-dev"))
    loaded: list[str] = []
    for given in [*files, *dirs]:
        is_dir = given in dirs or given.is_dir()
        for path in config_dir_files(given) if is_dir else [given]:
            _merge(merged, check_source(read_config_file(path), str(path)))
            loaded.append(str(path))
    for fragment in hcl:
        _merge(merged, check_source(parse_hcl(fragment, "-hcl"), "-hcl"))
    if overrides:
        _merge(merged, check_source(overrides, COMMAND_LINE, _with_flag))
    merged.setdefault("node_name", socket.gethostname())
    merged.setdefault("datacenter", "dc1")
    merged.setdefault("primary_datacenter", merged["datacenter"])
    merged["dev_mode"] = dev
    config = msgspec.convert(merged, AgentConfig)
    validate_config(config)
    if check_tls_files:
        _check_tls_files(config)
    log.info(
        "agent configuration loaded and valid",
        extra={"config_files": loaded, "dev": dev, "flags": sorted(overrides or {})},
    )
    return config


def _with_flag(path: str) -> str:
    flag = flag_for_key(path)
    return path if flag is None else f"{path} ({flag})"


def _merge(into: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        current = into.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            _merge(current, value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(current, list):
            into[key] = [*current, *value]
        else:
            into[key] = value


def _check_tls_files(config: AgentConfig) -> None:
    d = config.tls.defaults
    if d.ca_file is None:
        return
    # here, not at the top: loading a config without TLS files (every CLI
    # command but the agent) must not import the X.509 stack
    from wanfed_agent.tls import TLSMaterial

    try:
        TLSMaterial.load(d.ca_file, d.cert_file, d.key_file)
    except TLSMaterialError as error:
        raise ConfigError(f"tls.defaults: {error}", key="tls.defaults") from None
