"""A deeply nested JSON body is the caller's error: a 400 naming the cap, never a 500.

Without the nesting cap a few kilobytes of ``[[[[...`` exhaust the
interpreter's recursion limit in the decoder or in the key renaming, and the
answer is a 500 with a traceback in the log. After each refusal the server
still answers and still accepts a normal write.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import pytest

from wanfed_server.http import HttpApi, HttpError
from wanfed_server.http._body import MAX_JSON_DEPTH, decode_json, json_depth

if TYPE_CHECKING:
    from conftest import FakeServer

WRITE_PATHS = ["/v1/catalog/register", "/v1/catalog/deregister", "/v1/agent/service/register"]
REFUSAL = f"Request decode failed: JSON nested deeper than {MAX_JSON_DEPTH} levels"


def nested_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_in_registration(depth: int) -> bytes:
    """A well-formed registration whose node meta hides a deep value."""
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"Node":"n1","Address":"198.18.0.1","NodeMeta":{"k":' + inner + b"}}"


@pytest.fixture
async def base(fake_server: FakeServer) -> AsyncIterator[str]:
    http = HttpApi(fake_server.dispatcher, fake_server.view, fake_server.agent, "127.0.0.1", 0)
    await http.start()
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        await http.stop()


async def _put(base: str, path: str, body: bytes) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.put(base + path, data=body) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize("path", WRITE_PATHS)
@pytest.mark.parametrize(
    ("body", "well_formed"),
    [
        (nested_array(MAX_JSON_DEPTH + 1), True),  # decodes, but too deep to walk
        (nested_array(900), True),  # decodes near the recursion limit; walking it would not
        (nested_array(100_000), True),  # beyond what the decoder itself can descend
        (b'{"x":' * 50_000 + b"1" + b"}" * 50_000, True),
        (nested_in_registration(200), True),
        (nested_array(100_000)[:-10], False),  # deep and truncated
    ],
    ids=["cap+1", "900", "100k", "objects-50k", "in-meta", "truncated"],
)
async def test_deep_body_is_a_400_and_the_server_stays_writable(
    base: str, path: str, body: bytes, well_formed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    status, text = await _put(base, path, body)
    assert status == 400
    assert text.startswith("Request decode failed"), text
    if well_formed:
        assert text == REFUSAL
    assert "http handler failed" not in caplog.text
    # Healthy and writable afterwards.
    ok = (
        b'{"Node":"n1","Address":"198.18.0.1",'
        b'"Service":{"Service":"web","Port":80},"NodeMeta":{"k":"v"}}'
    )
    assert await _put(base, "/v1/catalog/register", ok) == (200, "true")
    async with (
        aiohttp.ClientSession() as session,
        session.get(base + "/v1/status/leader") as response,
    ):
        assert response.status == 200


async def test_a_body_at_the_cap_is_still_decoded(base: str) -> None:
    meta = b'{"k":' + b"[" * (MAX_JSON_DEPTH - 2) + b"]" * (MAX_JSON_DEPTH - 2) + b"}"
    body = b'{"Node":"n1","Address":"198.18.0.1","Datacenter":"dc1","TaggedAddresses":' + meta
    body += b"}"
    assert json_depth(decode_json(body)) == MAX_JSON_DEPTH
    # The catalog refuses a list where a string belongs, but as a type error: the
    # nesting itself was accepted.
    status, text = await _put(base, "/v1/catalog/register", body)
    assert status == 400
    assert text != REFUSAL


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("x", 0), ([], 1), ({}, 1), ([1, [2]], 2), ({"a": [{"b": {}}]}, 4), ([[], [[[]]]], 4)],
)
def test_json_depth_counts_levels(value: object, depth: int) -> None:
    assert json_depth(value) == depth


def test_decode_json_refusals_name_the_problem() -> None:
    with pytest.raises(HttpError) as empty:
        decode_json(b"  ")
    assert empty.value.status == 400
    assert "empty body" in empty.value.message
    with pytest.raises(HttpError) as deep:
        decode_json(nested_array(MAX_JSON_DEPTH + 1))
    assert (deep.value.status, deep.value.message) == (400, REFUSAL)
    assert decode_json(nested_array(MAX_JSON_DEPTH)) is not None
