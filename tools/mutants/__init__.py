"""Curated mutations of wanfed's security and federation guards, each with its killer.

A guard is only as good as the test that notices when it is gone. Each entry
of :data:`MUTATIONS` removes or bends one guard with an exact source edit and
names the tests that must then fail. ``nox -s mutants`` (``python -m
tools.mutants``) applies every mutation to a private copy of the tree — the
checkout itself is never written — runs only the named tests there, and fails
when a mutation survives or when its original snippet no longer matches, so a
refactor that moves a guard has to move its entry too. A new guard comes with
its entry.

Never imported by the product.
"""

from ._catalog import MUTATIONS, Mutation
from ._runner import Outcome, Verdict, check_snippets, run_mutations

__all__ = ["MUTATIONS", "Mutation", "Outcome", "Verdict", "check_snippets", "run_mutations"]
