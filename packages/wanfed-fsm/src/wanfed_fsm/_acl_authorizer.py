"""Answering "may this token do X" from the rules of its policies.

Theory of operation. All policies of a token are merged into one table per
resource before any question is asked, so a question costs a dictionary
lookup or a few (one per distinct prefix length), never a walk over rules.
The answer for a name follows Consul:

1. an exact rule for the name (``service "web"``) decides, if there is one;
2. otherwise the longest prefix rule that the name starts with decides
   (``service_prefix "web-"`` beats ``service_prefix ""``), even when a
   shorter prefix says something else;
3. rules for the same resource, kind and segment - from one policy or from
   several - merge by the order deny > write > read, so ``deny`` wins at
   equal specificity;
4. when no rule matches, the default policy (``acl.default_policy``) answers.

``write`` implies ``read``; ``deny`` denies both. An absent ``mesh`` rule
falls back to the ``operator`` rule, as in Consul. A token holding the
built-in global-management policy may do everything; a policy restricted to
other datacenters (``Datacenters``) does not count here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from ._acl_rules import Access, PolicyRules, Resource, parse_rules
from ._acl_structs import MANAGEMENT_POLICY_ID, ACLPolicy

__all__ = ["Authorizer", "DefaultPolicy"]

DefaultPolicy = Literal["allow", "deny"]


class _Segments:
    """Exact and prefix rules of one segmented resource, merged."""

    __slots__ = ("exact", "lengths", "prefixes")

    def __init__(self) -> None:
        self.exact: dict[str, Access] = {}
        self.prefixes: dict[str, Access] = {}
        self.lengths: tuple[int, ...] = ()
        """Distinct prefix lengths, longest first."""

    def add(self, segment: str, *, prefix: bool, access: Access) -> None:
        table = self.prefixes if prefix else self.exact
        current = table.get(segment)
        table[segment] = access if current is None else max(current, access)

    def freeze(self) -> None:
        self.lengths = tuple(sorted({len(p) for p in self.prefixes}, reverse=True))

    def lookup(self, name: str) -> Access | None:
        access = self.exact.get(name)
        if access is not None:
            return access
        for length in self.lengths:
            if length <= len(name):
                access = self.prefixes.get(name[:length])
                if access is not None:
                    return access
        return None


class Authorizer:
    """The merged rules of one token plus the default policy. Immutable once built."""

    __slots__ = ("_default", "_management", "_segments", "_unsegmented")

    def __init__(
        self,
        rules: Iterable[PolicyRules] = (),
        *,
        default_policy: DefaultPolicy = "deny",
        management: bool = False,
    ) -> None:
        if default_policy not in ("allow", "deny"):
            raise ValueError(f"default policy must be allow or deny, got {default_policy!r}")
        self._default = default_policy == "allow"
        self._management = management
        self._segments: dict[Resource, _Segments] = {}
        self._unsegmented: dict[Resource, Access] = {}
        for policy in rules:
            for rule in policy.segments:
                self._segments.setdefault(rule.resource, _Segments()).add(
                    rule.segment, prefix=rule.prefix, access=rule.access
                )
            for resource, access in (
                (Resource.OPERATOR, policy.operator),
                (Resource.ACL, policy.acl),
                (Resource.MESH, policy.mesh),
            ):
                if access is not None:
                    current = self._unsegmented.get(resource)
                    self._unsegmented[resource] = (
                        access if current is None else max(current, access)
                    )
        for segments in self._segments.values():
            segments.freeze()

    @classmethod
    def from_policies(
        cls,
        policies: Iterable[ACLPolicy],
        *,
        default_policy: DefaultPolicy,
        datacenter: str,
    ) -> Authorizer:
        """The authorizer of a token holding ``policies``, evaluated in ``datacenter``.

        Policies whose ``Datacenters`` do not include ``datacenter`` are left
        out; the global-management policy (by ID) grants everything. Rules are
        parsed with a cache, so building is cheap for policies seen before.
        Raises :class:`~wanfed_fsm.ACLRulesError` for rules that do not parse
        (the store never holds such a policy).
        """
        applicable = [p for p in policies if not p.datacenters or datacenter in p.datacenters]
        if any(p.id == MANAGEMENT_POLICY_ID for p in applicable):
            return cls.management()
        return cls([_parsed(p.rules) for p in applicable], default_policy=default_policy)

    @classmethod
    def management(cls) -> Authorizer:
        """Everything is allowed (global management; also ACLs switched off)."""
        return cls(default_policy="allow", management=True)

    @property
    def is_management(self) -> bool:
        return self._management

    # --- the questions ----------------------------------------------------------

    def node_read(self, name: str) -> bool:
        return self._segment_allows(Resource.NODE, name, write=False)

    def node_write(self, name: str) -> bool:
        return self._segment_allows(Resource.NODE, name, write=True)

    def service_read(self, name: str) -> bool:
        return self._segment_allows(Resource.SERVICE, name, write=False)

    def service_write(self, name: str) -> bool:
        return self._segment_allows(Resource.SERVICE, name, write=True)

    def agent_read(self, node: str) -> bool:
        return self._segment_allows(Resource.AGENT, node, write=False)

    def agent_write(self, node: str) -> bool:
        return self._segment_allows(Resource.AGENT, node, write=True)

    def operator_read(self) -> bool:
        return self._allows(self._unsegmented.get(Resource.OPERATOR), write=False)

    def operator_write(self) -> bool:
        return self._allows(self._unsegmented.get(Resource.OPERATOR), write=True)

    def acl_read(self) -> bool:
        return self._allows(self._unsegmented.get(Resource.ACL), write=False)

    def acl_write(self) -> bool:
        return self._allows(self._unsegmented.get(Resource.ACL), write=True)

    def mesh_read(self) -> bool:
        return self._allows(self._mesh(), write=False)

    def mesh_write(self) -> bool:
        return self._allows(self._mesh(), write=True)

    # --- evaluation -------------------------------------------------------------

    def _mesh(self) -> Access | None:
        mesh = self._unsegmented.get(Resource.MESH)
        return mesh if mesh is not None else self._unsegmented.get(Resource.OPERATOR)

    def _segment_allows(self, resource: Resource, name: str, *, write: bool) -> bool:
        if self._management:
            return True
        segments = self._segments.get(resource)
        return self._allows(None if segments is None else segments.lookup(name), write=write)

    def _allows(self, access: Access | None, *, write: bool) -> bool:
        if self._management:
            return True
        if access is None:
            return self._default
        return access.allows_write if write else access.allows_read


_PARSE_CACHE_SIZE: Final = 4096
_parsed_cache: dict[str, PolicyRules] = {}


def _parsed(rules: str) -> PolicyRules:
    """``parse_rules`` with a bounded cache: a policy's text is parsed once, not per request."""
    found = _parsed_cache.get(rules)
    if found is None:
        found = parse_rules(rules)
        if len(_parsed_cache) >= _PARSE_CACHE_SIZE:
            _parsed_cache.clear()
        _parsed_cache[rules] = found
    return found
