"""Config files are bounded: size, nesting and durations are capped with a clear error.

Without the caps a file of ``[[[[...`` stops start-up with a RecursionError
traceback from the JSON or HCL parser (or from the code that walks the
result), and a huge file is read whole into memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wanfed_agent.config import ConfigError, load_config, parse_duration
from wanfed_agent.config._files import MAX_CONFIG_DEPTH, MAX_CONFIG_FILE_BYTES
from wanfed_agent.config._values import MAX_DURATION

WriteConfig = Callable[[str, str | dict[str, Any]], Path]


def _nested_json(depth: int) -> str:
    """A top-level object whose ``node_meta`` value nests ``depth`` levels in all."""
    return '{"node_meta": {"k": ' + "[" * (depth - 2) + "]" * (depth - 2) + "}}"


def _nested_hcl(blocks: int) -> str:
    return "".join(f"b{i} {{\n" for i in range(blocks)) + "x = 1\n" + "}\n" * blocks


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", _nested_json(MAX_CONFIG_DEPTH + 1)),
        ("deeper.json", _nested_json(900)),  # parses, but nothing may walk it recursively
        ("deepest.json", "[" * 100_000 + "]" * 100_000),  # beyond what the parser can descend
        ("deep-list.hcl", "a = " + "[" * 40 + "]" * 40 + "\n"),
        ("deeper-list.hcl", "a = " + "[" * 5000 + "]" * 5000 + "\n"),
        ("deep-blocks.hcl", _nested_hcl(MAX_CONFIG_DEPTH)),
    ],
)
def test_deep_config_is_a_config_error_naming_the_file(
    write_config: WriteConfig, name: str, text: str
) -> None:
    path = write_config(name, text)
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert f"nested deeper than {MAX_CONFIG_DEPTH} levels" in message


def test_deep_hcl_fragment_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="-hcl: nested deeper than"):
        load_config(hcl=["a = " + "[" * 5000 + "]" * 5000])


def test_nesting_at_the_cap_is_still_read(write_config: WriteConfig) -> None:
    path = write_config("ok.json", _nested_json(MAX_CONFIG_DEPTH))
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    # Refused for its type (node_meta values are strings), not for its nesting.
    assert "nested deeper" not in str(caught.value)


def test_a_file_over_the_size_cap_is_refused(write_config: WriteConfig) -> None:
    path = write_config("huge.json", "{}")
    with path.open("wb") as file:
        file.write(b"{" + b" " * MAX_CONFIG_FILE_BYTES + b"}")
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    assert str(caught.value) == (
        f"{path}: config file is larger than {MAX_CONFIG_FILE_BYTES} bytes"
    )


@pytest.mark.parametrize("text", ["9" * 400 + "h", "99999999999h", "292000y", "1e400s"])
def test_durations_beyond_gos_range_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(text)
    if text[0] == "9":
        assert "out of range" in str(caught.value)


def test_the_longest_duration_is_accepted() -> None:
    assert parse_duration("2562047h") == 2562047 * 3600.0
    with pytest.raises(ValueError, match="out of range"):
        parse_duration("2562048h")
    assert pytest.approx(9223372036.854776) == MAX_DURATION


def test_an_out_of_range_duration_in_a_config_file_names_the_key(
    write_config: WriteConfig,
) -> None:
    path = write_config("long.json", {"retry_interval_wan": "9" * 30 + "h"})
    with pytest.raises(ConfigError, match="retry_interval_wan") as caught:
        load_config([path])
    assert "out of range" in str(caught.value)


def test_an_integer_too_long_to_convert_is_invalid_json(write_config: WriteConfig) -> None:
    """Found by ``nox -s fuzz``: json.loads raises a plain ValueError beyond 4300 digits."""
    path = write_config("long-int.json", '{"ports": {"http": ' + "9" * 5000 + "}}")
    with pytest.raises(ConfigError) as caught:
        load_config([path])
    assert str(caught.value).startswith(f"{path}: invalid JSON: Exceeds the limit")
