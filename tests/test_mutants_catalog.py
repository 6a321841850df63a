"""The curated mutation list stays honest, and applying it never touches the checkout.

The full check (each mutation killed by its tests) is ``nox -s mutants``; this
is the cheap part every test run can afford: every entry still applies to
today's tree, names tests that exist, and the runner edits copies only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tools/ is not an installed package; pytest's importlib mode does not put the
# root on the path.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.mutants import MUTATIONS, Mutation, check_snippets  # noqa: E402
from tools.mutants._runner import apply, copy_tree  # noqa: E402


def test_every_snippet_matches_exactly_once_in_the_tree() -> None:
    assert check_snippets(ROOT, MUTATIONS) == {}


def test_names_are_unique_and_every_named_test_exists() -> None:
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names))
    for mutation in MUTATIONS:
        assert mutation.original != mutation.replacement, mutation.name
        for test in mutation.tests:
            path, _, function = test.partition("::")
            source = (ROOT / path).read_text(encoding="utf-8")
            assert f"def {function}(" in source, f"{mutation.name}: {test} does not exist"


def test_a_mutation_without_a_test_says_why() -> None:
    for mutation in MUTATIONS:
        if not mutation.tests:
            assert mutation.note, mutation.name


def _mutation(file: str, original: str) -> Mutation:
    return Mutation(
        name="m",
        behaviour="b",
        file=file,
        original=original,
        replacement="replaced",
        tests=("t.py::test_t",),
    )


def test_a_snippet_that_moved_or_repeats_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\nx = 1\ny = 2\n")
    assert check_snippets(tmp_path, [_mutation("a.py", "y = 2")]) == {}
    (missing,) = check_snippets(tmp_path, [_mutation("a.py", "z = 3")]).values()
    assert "occurs 0 times" in missing
    (twice,) = check_snippets(tmp_path, [_mutation("a.py", "x = 1")]).values()
    assert "occurs 2 times" in twice
    (gone,) = check_snippets(tmp_path, [_mutation("b.py", "x")]).values()
    assert "does not exist" in gone


def test_a_mutation_edits_the_copy_only(tmp_path: Path) -> None:
    tree, copies = tmp_path / "tree", tmp_path / "copies"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "m.py").write_text("guard = True\n")
    copy = copy_tree(tree, ["pkg/m.py"], copies / "one")
    apply(copy, _mutation("pkg/m.py", "guard = True"))
    assert (copy / "pkg" / "m.py").read_text() == "replaced\n"
    assert (tree / "pkg" / "m.py").read_text() == "guard = True\n"


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_every_mutation_says_what_it_breaks(mutation: Mutation) -> None:
    assert mutation.behaviour
    assert (ROOT / mutation.file).is_file()
