"""Consul's ACL rules language, HCL or JSON, decoded into :class:`PolicyRules`.

Rules text arrives from anyone holding ``acl:write`` (and, replicated, from
another datacenter), so it is decoded as untrusted input: a size cap, a depth
cap, and every problem reported as one :class:`ACLRulesError` naming the rule
(``service "web": policy``) or, for a syntax error, the line and column.

What is understood, as in Consul:

* segmented resources, each an exact form and a ``_prefix`` form:
  ``node``, ``service``, ``agent`` (``service "web" { policy = "read" }``,
  ``service_prefix "" { policy = "write" }``);
* unsegmented resources: ``operator``, ``acl``, ``mesh`` (``operator = "read"``);
* dispositions ``read``, ``write`` and ``deny``.

Resources wanfed has no data for (``key``/``key_prefix``, ``session``,
``event``, ``query`` and their prefixes, ``keyring``) are accepted so that
policies written for Consul load unchanged, their dispositions are checked
(``list`` is allowed on ``key``/``key_prefix`` only, as in Consul), and they
are then ignored; :attr:`PolicyRules.ignored` names them so an API can say so.
Anything else (a typo such as ``servce``) is refused.

HCL goes through python-hcl2, which reads the HCL1 forms Consul documents
(labelled blocks, ``=`` attributes, ``#``/``//``/``/* */`` comments). Within
one HCL text a repeated attribute replaces the earlier one, as the parser
does; JSON refuses duplicate keys. The same resource and segment given twice
(two ``service "web"`` blocks) is merged the way rules of several policies
merge: see :mod:`wanfed_fsm._acl_authorizer`.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from ._acl_errors import ACLRulesError

__all__ = [
    "MAX_RULES_BYTES",
    "ACLRulesError",
    "Access",
    "PolicyRules",
    "Resource",
    "SegmentRule",
    "parse_rules",
]

MAX_RULES_BYTES: Final = 256 * 1024
"""Longest rules text accepted; real policies are a few kilobytes."""

_MAX_DEPTH: Final = 16
"""Deepest nesting a rules document may have (real ones nest 3 deep)."""


class Access(enum.IntEnum):
    """A disposition. The order is the merge order at equal specificity: deny wins, then
    write, then read, then list."""

    LIST = 1
    READ = 2
    WRITE = 3
    DENY = 4

    @property
    def allows_read(self) -> bool:
        """``write`` implies ``read``; ``list`` (key rules only) does not matter here."""
        return self in (Access.READ, Access.WRITE)

    @property
    def allows_write(self) -> bool:
        return self is Access.WRITE


class Resource(enum.StrEnum):
    """The resources wanfed enforces."""

    NODE = "node"
    SERVICE = "service"
    AGENT = "agent"
    OPERATOR = "operator"
    ACL = "acl"
    MESH = "mesh"


_SEGMENTED: Final = frozenset({Resource.NODE, Resource.SERVICE, Resource.AGENT})
_UNSEGMENTED: Final = frozenset({Resource.OPERATOR, Resource.ACL, Resource.MESH})
_IGNORED_SEGMENTED: Final = frozenset({"key", "session", "event", "query"})
_IGNORED_UNSEGMENTED: Final = frozenset({"keyring"})
_BLOCK_KEYS: Final = {"policy", "intentions"}
"""Keys a segment block may hold; ``intentions`` (on service rules) is checked and ignored."""

_NAMES: Final = {access.name.lower(): access for access in Access}


class SegmentRule(msgspec.Struct, frozen=True, kw_only=True):
    """One ``<resource>`` or ``<resource>_prefix`` rule: segment and disposition."""

    resource: Resource
    segment: str
    prefix: bool
    access: Access


class PolicyRules(msgspec.Struct, frozen=True, kw_only=True):
    """The rules of one policy, decoded. Segment rules keep their text order."""

    segments: tuple[SegmentRule, ...] = ()
    operator: Access | None = None
    acl: Access | None = None
    mesh: Access | None = None
    ignored: tuple[str, ...] = ()
    """Resources accepted for compatibility but not enforced (``key_prefix``, ``keyring``...)."""


def parse_rules(text: str) -> PolicyRules:
    """Decode rules in HCL or JSON (JSON when the text starts with ``{``)."""
    if not isinstance(text, str):
        raise ACLRulesError("rules must be text")
    if len(text) > MAX_RULES_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_RULES_BYTES:
        raise ACLRulesError(f"rules are longer than {MAX_RULES_BYTES} bytes")
    if not text.strip():
        return PolicyRules()
    document = _load_json(text) if text.lstrip().startswith("{") else _load_hcl(text)
    _check_depth(document)
    return _Decoder().document(document)


# --- syntax ------------------------------------------------------------------


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ACLRulesError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except ACLRulesError:
        raise
    except json.JSONDecodeError as error:
        raise ACLRulesError(
            f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:
        raise ACLRulesError(f"nested deeper than {_MAX_DEPTH} levels") from None
    except ValueError as error:  # integers too long to convert
        raise ACLRulesError(f"invalid JSON: {error}") from None


@functools.cache
def _hcl_options() -> Any:
    import hcl2

    return hcl2.SerializationOptions(
        with_comments=False,
        explicit_blocks=True,
        strip_string_quotes=True,
        preserve_heredocs=False,
    )


def _load_hcl(text: str) -> Any:
    try:
        import hcl2

        return hcl2.loads(text, serialization_options=_hcl_options())
    except RecursionError:
        raise ACLRulesError(f"nested deeper than {_MAX_DEPTH} levels") from None
    except Exception as error:  # the parser raises many unrelated lark and value types
        line, column = getattr(error, "line", None), getattr(error, "column", None)
        if isinstance(line, int) and isinstance(column, int) and line > 0:
            where = f"at line {line}, column {column}"
        else:
            detail = str(error).strip().splitlines()
            where = detail[0][:200] if detail else type(error).__name__
        raise ACLRulesError(f"invalid HCL {where}") from None


def _check_depth(value: object) -> None:
    """Level by level, without recursion, so any depth can be measured."""
    depth = 0
    level = [value]
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        if depth > _MAX_DEPTH:
            raise ACLRulesError(f"nested deeper than {_MAX_DEPTH} levels")
        level = []
        for container in containers:
            level.extend(container.values() if isinstance(container, dict) else container)


# --- meaning -----------------------------------------------------------------

_BLOCK_MARKER: Final = "__is_block__"


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:40]!r}..."
    if isinstance(value, Mapping):
        return "a block"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


class _Decoder:
    """Walks a decoded document (HCL blocks or JSON objects) into :class:`PolicyRules`."""

    def __init__(self) -> None:
        self.segments: list[SegmentRule] = []
        self.unsegmented: dict[Resource, Access] = {}
        self.ignored: list[str] = []

    def document(self, document: object) -> PolicyRules:
        if not isinstance(document, Mapping):
            raise ACLRulesError("expected an object of rules at the top level")
        for name, value in document.items():
            if name == _BLOCK_MARKER:
                continue
            self.entry(str(name), value)
        return PolicyRules(
            segments=tuple(self.segments),
            operator=self.unsegmented.get(Resource.OPERATOR),
            acl=self.unsegmented.get(Resource.ACL),
            mesh=self.unsegmented.get(Resource.MESH),
            ignored=tuple(dict.fromkeys(self.ignored)),
        )

    def entry(self, name: str, value: object) -> None:
        base, prefix = (
            (name[: -len("_prefix")], True) if name.endswith("_prefix") else (name, False)
        )
        if base in _SEGMENTED or base in _IGNORED_SEGMENTED:
            for segment, body in self.segments_of(name, value):
                access = self.block(name, segment, body, allow_list=base == "key")
                if access is None:
                    continue
                if base in _IGNORED_SEGMENTED:
                    self.ignored.append(name)
                else:
                    self.segments.append(
                        SegmentRule(
                            resource=Resource(base), segment=segment, prefix=prefix, access=access
                        )
                    )
            return
        if name in _UNSEGMENTED or name in _IGNORED_UNSEGMENTED:
            access = self.disposition(name, value, allow_list=False)
            if name in _IGNORED_UNSEGMENTED:
                self.ignored.append(name)
            else:
                self.unsegmented[Resource(name)] = access
            return
        known = sorted(
            [*(r.value for r in _SEGMENTED), *(f"{r.value}_prefix" for r in _SEGMENTED)]
            + [r.value for r in _UNSEGMENTED]
        )
        raise ACLRulesError(f"unknown resource {name!r}; expected one of: {', '.join(known)}")

    @staticmethod
    def segments_of(name: str, value: object) -> list[tuple[str, object]]:
        """``{"web": {...}}`` or a list of such objects (HCL blocks; JSON may use either)."""
        items = value if isinstance(value, list) else [value]
        found: list[tuple[str, object]] = []
        for item in items:
            if not isinstance(item, Mapping):
                raise ACLRulesError(
                    f'expected {name} "<name>" {{ policy = "..." }}, got {_describe(item)}',
                    key=name,
                )
            for segment, body in item.items():
                if segment == _BLOCK_MARKER:
                    continue
                found.append((str(segment), body))
        return found

    def block(self, name: str, segment: str, body: object, *, allow_list: bool) -> Access | None:
        """The disposition of one segment block; None when it holds only ``intentions``."""
        key = f'{name} "{segment}"'
        if not isinstance(body, Mapping):
            raise ACLRulesError(
                f'expected a block {{ policy = "..." }}, got {_describe(body)}', key=key
            )
        fields = {k: v for k, v in body.items() if k != _BLOCK_MARKER}
        for field in fields:
            if field not in _BLOCK_KEYS or (
                field == "intentions" and not name.startswith("service")
            ):
                allowed = "policy, intentions" if name.startswith("service") else "policy"
                raise ACLRulesError(f"unknown key {field!r}; expected {allowed}", key=key)
        if "intentions" in fields:
            self.disposition(f"{key}: intentions", fields["intentions"], allow_list=False)
            if "intentions" not in self.ignored:
                self.ignored.append("intentions")
        if "policy" not in fields:
            if "intentions" in fields:
                return None
            raise ACLRulesError("missing policy", key=key)
        return self.disposition(f"{key}: policy", fields["policy"], allow_list=allow_list)

    @staticmethod
    def disposition(key: str, value: object, *, allow_list: bool) -> Access:
        access = _NAMES.get(value) if isinstance(value, str) else None
        if access is None or (access is Access.LIST and not allow_list):
            expected = "read, write, deny" + (" or list" if allow_list else "")
            raise ACLRulesError(f"expected one of {expected}, got {_describe(value)}", key=key)
        return access
