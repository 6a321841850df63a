"""``python -m tools.mutants``: apply every curated mutation and require it to be killed.

Prints one row per mutation (mutation, killing test, killed) and exits 1 when
any mutation survives, names no test, cannot be applied because its original
snippet no longer matches, or when its tests already fail on the unmutated
tree. ``--list`` prints the catalog without running anything.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from ._catalog import MUTATIONS, Mutation
from ._runner import Outcome, Verdict, run_baseline, run_mutations, scratch_directory

ROOT = Path(__file__).resolve().parents[2]


def _select(names: list[str]) -> list[Mutation]:
    known = {m.name for m in MUTATIONS}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(f"unknown mutation(s) {unknown}; known: {sorted(known)}")
    return [m for m in MUTATIONS if not names or m.name in names]


def _print_catalog(mutations: list[Mutation]) -> None:
    for m in mutations:
        print(f"{m.name}\n  breaks: {m.behaviour}\n  file:   {m.file}")
        for test in m.tests or ("(none named: " + m.note + ")",):
            print(f"  killer: {test}")


def _print_table(outcomes: list[Outcome]) -> None:
    rows = [("mutation", "killing test", "killed")]
    for outcome in outcomes:
        killer = ", ".join(outcome.killers) or ", ".join(outcome.mutation.tests) or "-"
        rows.append((outcome.mutation.name, killer, outcome.verdict.value))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for i, (name, killer, killed) in enumerate(rows):
        print(f"{name:<{widths[0]}}  {killer:<{widths[1]}}  {killed}")
        if i == 0:
            print(f"{'-' * widths[0]}  {'-' * widths[1]}  ------")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutants", description=__doc__)
    parser.add_argument("names", nargs="*", help="run only these mutations (default: all)")
    parser.add_argument("-n", "--jobs", type=int, default=2, help="mutations run at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    parser.add_argument("--list", action="store_true", help="print the catalog and exit")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip running the killers unmutated first"
    )
    args = parser.parse_args(argv)
    mutations = _select(args.names)
    if args.list:
        _print_catalog(mutations)
        return 0
    started = time.monotonic()
    with scratch_directory() as scratch:
        if not args.no_baseline:
            tests = [t for m in mutations for t in m.tests]
            print(f"baseline: {len(set(tests))} killing tests on the unmutated tree", flush=True)
            passed, output = run_baseline(
                ROOT, scratch, tests, jobs=args.jobs, timeout=args.timeout
            )
            if not passed:
                print(output)
                print("the killing tests fail without any mutation: fix them first")
                return 1
        print(f"mutations: {len(mutations)}, {args.jobs} at a time", flush=True)
        outcomes = run_mutations(ROOT, mutations, scratch, jobs=args.jobs, timeout=args.timeout)
    print()
    _print_table(outcomes)
    bad = [o for o in outcomes if o.verdict is not Verdict.KILLED]
    for outcome in bad:
        print(f"\n{outcome.mutation.name}: {outcome.verdict.value}")
        print(f"  breaks: {outcome.mutation.behaviour}")
        if outcome.detail:
            print("  " + outcome.detail.replace("\n", "\n  "))
    killed = len(outcomes) - len(bad)
    print(f"\n{killed}/{len(outcomes)} killed in {time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every test run stopped, the checkout untouched", file=sys.stderr)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.exit(2)
