"""Errors of the ACL tables and rules; all are :class:`~wanfed_fsm.FsmError` values.

A rejected ACL write is an FSM result like any other (every server agrees
that entry N failed), so these carry the message an API answers with.
"""

from __future__ import annotations

from ._errors import FsmError

__all__ = [
    "ACLBootstrapNotAllowedError",
    "ACLBootstrapResetIndexError",
    "ACLError",
    "ACLRulesError",
]


class ACLError(FsmError, ValueError):
    """An ACL write that would leave the ACL tables inconsistent (a name taken twice,
    a secret reused, a built-in record changed)."""


class ACLRulesError(ACLError):
    """Rules text that is not valid Consul ACL rules. ``key`` names the rule, if one is at fault."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(f"Failed to parse ACL rules: {key + ': ' if key else ''}{message}")
        self.key = key


class ACLBootstrapNotAllowedError(ACLError):
    """Bootstrap was done already. ``reset_index`` is what an operator writes to the
    reset file to allow one more bootstrap, as in Consul."""

    def __init__(self, reset_index: int) -> None:
        super().__init__(f"ACL bootstrap no longer allowed (reset index: {reset_index})")
        self.reset_index = reset_index


class ACLBootstrapResetIndexError(ACLError):
    """A bootstrap carried a reset index that is not the index of the last bootstrap."""

    def __init__(self, given: int, reset_index: int) -> None:
        super().__init__(
            f"Invalid ACL bootstrap reset index {given}: the reset index is {reset_index}"
        )
        self.given = given
        self.reset_index = reset_index
