"""Property tests: untrusted request bodies either decode or fail with a 400-class error."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_server.http import HttpError
from wanfed_server.http._body import canonical_keys
from wanfed_server.http._catalog import _FIELD_NAMES, _register_request
from wanfed_server.local_agent import DefinitionError, parse_service_definition

_KEYS = st.sampled_from(
    [
        "Name", "name", "ID", "id", "Port", "port", "Tags", "Meta", "Kind", "Address",
        "TaggedAddresses", "tagged_addresses", "Check", "Checks", "checks", "TTL", "ttl",
        "TCP", "tcp", "Interval", "Timeout", "Status", "CheckID", "Node", "Service",
        "ServiceID", "NodeMeta", "SkipNodeUpdate", "DeregisterCriticalServiceAfter", "x",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["10s", "1m30s", "0", "-1s", "127.0.0.1:80", "passing", "bogus", "web"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=6)),
    max_leaves=25,
)


@settings(max_examples=400)
@given(_JSON)
def test_service_definitions_decode_or_raise_definition_error(body: object) -> None:
    try:
        definition = parse_service_definition(body)
    except DefinitionError as error:
        message = str(error)
    else:
        message = ""
    if message:
        return
    assert definition.service.service
    ids = [check.check_id for check in definition.checks]
    assert len(ids) == len(set(ids))
    for check in definition.checks:
        assert (check.ttl is None) != (check.tcp == "")


@settings(max_examples=400)
@given(_JSON)
def test_catalog_registrations_decode_or_raise_a_client_error(body: object) -> None:
    status = 0
    try:
        request = _register_request(body, "dc1", "")
    except HttpError as error:
        status = error.status
    except msgspec.ValidationError:  # the middleware's 400 "Request decode failed"
        status = 400
    if status:
        assert status == 400
        return
    assert request.node.node
    assert request.node.address
    assert all(check.node for check in request.checks)


@given(_JSON)
def test_canonical_keys_keeps_user_maps_and_values(body: object) -> None:
    renamed = canonical_keys(body, _FIELD_NAMES)
    if isinstance(body, dict):
        assert isinstance(renamed, dict)
        assert len(renamed) <= len(body)
        for key, value in body.items():
            if key in ("Meta", "NodeMeta"):
                assert renamed[key] == value
    elif not isinstance(body, list):
        assert renamed == body
