"""Reading config files (JSON or HCL) into plain nested dicts.

python-hcl2 represents every block as a list of dicts (a block may repeat) and
keeps string quotes unless told otherwise; :func:`read_config_file` smooths
that into the same shape a JSON file has, so one schema checks both.

A config file is read whole, so its size is capped (:data:`MAX_CONFIG_FILE_BYTES`,
far above any real configuration) and so is its nesting
(:data:`MAX_CONFIG_DEPTH`): the JSON and HCL parsers and the code after them
recurse, and a file of ``[[[[...`` must be a clear error naming the file, not
a RecursionError traceback at start-up. Parsing is local and linear in the
size, so the size cap also bounds its time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = [
    "CONFIG_SUFFIXES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_FILE_BYTES",
    "config_dir_files",
    "parse_hcl",
    "read_config_file",
]

CONFIG_SUFFIXES = (".json", ".hcl")
MAX_CONFIG_FILE_BYTES = 16 * 1024 * 1024
MAX_CONFIG_DEPTH = 32
"""Deepest nesting of blocks, objects and lists (real configs nest about 5 deep)."""

_BLOCK_MARKER = "__is_block__"


@functools.cache
def _hcl_options() -> Any:
    """The HCL parser is imported on first use: it costs ~0.1 s at every start otherwise."""
    import hcl2

    return hcl2.SerializationOptions(
        with_comments=False,
        explicit_blocks=True,
        strip_string_quotes=True,
        preserve_heredocs=False,
    )


def config_dir_files(directory: Path) -> list[Path]:
    """The ``.json``/``.hcl`` files of a config dir in lexical order, like Consul.

    Other files (editor backups, READMEs) and sub-directories are skipped so a
    dir can be shared with unrelated material.
    """
    if not directory.is_dir():
        raise ConfigError(f"{directory}: config dir does not exist or is not a directory")
    return sorted(
        path for path in directory.iterdir() if path.suffix in CONFIG_SUFFIXES and path.is_file()
    )


def read_config_file(path: Path) -> dict[str, Any]:
    source = str(path)
    if path.suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"{source}: expected a config file named *.json or *.hcl", source=source)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_FILE_BYTES + 1)
        if len(raw) > MAX_CONFIG_FILE_BYTES:
            raise ConfigError(
                f"{source}: config file is larger than {MAX_CONFIG_FILE_BYTES} bytes",
                source=source,
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file does not exist", source=source) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read config file: {error}", source=source) from None
    if path.suffix == ".json":
        return _parse_json(text, source)
    return parse_hcl(text, source)


def _parse_json(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as error:  # JSONDecodeError, and integers too long to convert
        raise ConfigError(f"{source}: invalid JSON: {error}", source=source) from None
    except RecursionError:
        raise _too_deep(source) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level", source=source)
    _check_depth(data, source)
    return data


def _too_deep(source: str) -> ConfigError:
    return ConfigError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels", source=source)


def _check_depth(value: object, source: str) -> None:
    """Refuse nesting beyond :data:`MAX_CONFIG_DEPTH`, measured level by level without
    recursion (so that any depth can be measured)."""
    depth = 0
    level = [value]
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(source)
        level = []
        for container in containers:
            level.extend(container.values() if isinstance(container, dict) else container)


def parse_hcl(text: str, source: str) -> dict[str, Any]:
    """HCL text (a file's or a ``-hcl`` fragment's) as nested dicts."""
    try:
        import hcl2

        data = hcl2.loads(text, serialization_options=_hcl_options())
    except RecursionError:
        raise _too_deep(source) from None
    except Exception as error:  # the parser raises several unrelated lark types
        raise ConfigError(f"{source}: invalid HCL: {_hcl_problem(error)}", source=source) from None
    _check_depth(data, source)
    return _merge_blocks(data, source, "")


def _hcl_problem(error: Exception) -> str:
    """Where the HCL parser stopped, without the text it stopped at: that text may be a
    secret (an ACL token) and the message goes to a terminal or a log."""
    line, column = getattr(error, "line", None), getattr(error, "column", None)
    token = getattr(error, "token", None)
    kind = getattr(token, "type", None)
    if isinstance(line, int) and isinstance(column, int) and line > 0:
        what = f"unexpected {kind} " if isinstance(kind, str) else "syntax error "
        return f"{what}at line {line}, column {column}"
    return type(error).__name__


def _merge_blocks(data: dict[str, Any], source: str, prefix: str) -> dict[str, Any]:
    """Turn ``{"tls": [{"defaults": [...]}, {...}]}`` into nested dicts.

    Repeated blocks (``tls { a } tls { b }``) are merged key by key; a key set
    twice is an error rather than a silent last-wins inside one file.
    """
    result: dict[str, Any] = {}
    for name, value in data.items():
        if name == _BLOCK_MARKER:
            continue
        path = f"{prefix}{name}"
        if isinstance(value, list) and value and all(_is_block(item) for item in value):
            merged: dict[str, Any] = {}
            for item in value:
                for key, inner in _merge_blocks(item, source, f"{path}.").items():
                    if key in merged:
                        raise ConfigError(
                            f"{source}: {path}.{key}: set more than once",
                            source=source,
                            key=f"{path}.{key}",
                        )
                    merged[key] = inner
            result[name] = merged
        elif isinstance(value, dict):
            result[name] = _merge_blocks(value, source, f"{path}.")
        else:
            result[name] = value
    return result


def _is_block(item: object) -> bool:
    return isinstance(item, dict) and bool(item.get(_BLOCK_MARKER))
