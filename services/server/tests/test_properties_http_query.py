"""Property tests: any query string is parsed into bounded parameters or refused with a 400."""

from __future__ import annotations

import math
import urllib.parse

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from wanfed_agent.config._values import MAX_DURATION
from wanfed_server.http import HttpError
from wanfed_server.http._query import QueryParams, parse_query

_KEYS = st.sampled_from(["dc", "index", "wait", "stale", "consistent", "token", "tag", "x"])
_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers().map(str),
    st.from_regex(r"[0-9]{1,400}(\.[0-9]+)?(ns|us|ms|s|m|h)", fullmatch=True),
)


def _parse(pairs: list[tuple[str, str | None]]) -> QueryParams:
    query = "&".join(
        urllib.parse.quote(key, safe="")
        + ("" if value is None else "=" + urllib.parse.quote(value, safe=""))
        for key, value in pairs
    )
    return parse_query(make_mocked_request("GET", "/v1/catalog/nodes?" + query), "dc1")


@given(st.lists(st.tuples(_KEYS | st.text(max_size=8), st.none() | _VALUES), max_size=8))
def test_any_query_is_parsed_within_bounds_or_a_400(pairs: list[tuple[str, str | None]]) -> None:
    try:
        params = _parse(pairs)
    except HttpError as error:
        assert error.status == 400  # noqa: PT017 - the refusal is one allowed outcome
        return
    assert 0 <= params.min_query_index < 2**64
    assert math.isfinite(params.max_query_time)
    assert 0 <= params.max_query_time <= MAX_DURATION
    assert not (params.allow_stale and params.require_consistent)
    assert params.datacenter


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("wait", "9" * 400 + "h")], "Invalid wait time"),
        ([("wait", "99999999999h")], "Invalid wait time"),
        ([("index", "9" * 5000)], "Invalid index"),
        ([("index", str(2**64))], "Invalid index"),
        ([("stale", None), ("consistent", None)], "Cannot specify ?stale with ?consistent"),
    ],
)
def test_out_of_range_parameters_are_a_400(
    pairs: list[tuple[str, str | None]], message: str
) -> None:
    with pytest.raises(HttpError) as caught:
        _parse(pairs)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)
