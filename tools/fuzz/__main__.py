"""``python -m tools.fuzz [--minutes N] [--only a,b] [--engine atheris|hypothesis] [--out DIR]``.

Runs every target of ``tools.fuzz._targets.TARGETS`` for an equal share of the
time budget, one process each, and prints per decoder how many inputs were
tried, the coverage reached and what was found. A finding's reproducer is
saved under ``OUT/<target>/``; replay it with
``python -m tools.fuzz --replay OUT/<target>/crash-...``. Exits non-zero
when anything was found.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._targets import TARGETS, with_repetition

ROOT = Path(__file__).resolve().parents[2]
_RUNS = re.compile(r"Done (\d+) runs in (\d+) second")
_COVERAGE = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")


@dataclass
class Outcome:
    name: str
    runs: int
    coverage: str
    finding: str
    reproducers: list[Path]


def _engine(requested: str | None) -> str:
    if requested:
        return requested
    return "atheris" if importlib.util.find_spec("atheris") is not None else "hypothesis"


def _fuzz_one(name: str, seconds: int, out: Path, engine: str) -> Outcome:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    before = {p for p in folder.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))}
    command = [sys.executable, "-m", "tools.fuzz._worker", name, str(seconds), str(out), engine]
    started = time.monotonic()
    # The worker stops itself after `seconds`; the margin covers start-up and one slow input.
    limit = seconds + 120
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=limit, check=False
        )
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        output = str(expired.stdout or "") + str(expired.stderr or "")
        code = -1
    (folder / "log.txt").write_text(output)
    runs_match = _RUNS.findall(output)
    progress = re.findall(r"^#(\d+)\s", output, re.MULTILINE)  # libFuzzer's status lines
    runs = int(runs_match[-1][0]) if runs_match else int(progress[-1]) if progress else 0
    coverage_match = _COVERAGE.findall(output)
    coverage = (
        f"{coverage_match[-1][0]} edges, {coverage_match[-1][2]} inputs in corpus"
        if coverage_match
        else "-"
    )
    found = sorted(p for p in folder.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    new = [p for p in found if p not in before]
    if code == 0 and not new:
        finding = "nothing"
    else:
        finding = _summary(output, code, time.monotonic() - started)
    return Outcome(name, runs, coverage, finding, new)


def _summary(output: str, code: int, elapsed: float) -> str:
    for pattern in (
        r"=+ (Uncaught Python exception: .*)",
        r"(ERROR: libFuzzer: timeout.*)",
        r"(ERROR: libFuzzer: out-of-memory.*)",
        r"crash: (.*?); reproducer",
        r"^(\w*Error: .*)$",
    ):
        match = re.search(pattern, output, re.MULTILINE)
        if match:
            exception = re.findall(r"^(\w+(?:Error|Exception)\w*: .*)$", output, re.MULTILINE)
            detail = f" ({exception[-1][:120]})" if exception else ""
            return match.group(1).strip()[:120] + detail
    return f"worker exited {code} after {elapsed:.0f}s; see log.txt"


def _replay(path: Path) -> int:
    name = path.parent.name
    print(f"replaying {path} against {name}")
    with_repetition(TARGETS[name].run)(path.read_bytes())
    print("no exception: fixed (or not reproducible)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0, help="total budget (default 2)")
    parser.add_argument("--only", default="", help="comma-separated targets (default: all)")
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz")
    parser.add_argument("--replay", type=Path, default=None, help="re-run one reproducer")
    args = parser.parse_args(argv)
    if args.replay is not None:
        return _replay(args.replay)
    names = [n for n in args.only.split(",") if n] or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    engine = _engine(args.engine)
    seconds = max(5, int(args.minutes * 60 / len(names)))
    print(f"fuzzing {len(names)} decoders with {engine}, {seconds}s each, findings in {args.out}")
    outcomes: list[Outcome] = []
    for name in names:
        outcome = _fuzz_one(name, seconds, args.out, engine)
        outcomes.append(outcome)
        print(f"  {name:14} {outcome.runs:>9} inputs  {outcome.finding}", flush=True)
    print()
    print(f"{'decoder':14} {'what':42} {'inputs':>9}  {'coverage':32} found")
    for outcome in outcomes:
        what = TARGETS[outcome.name].what
        print(
            f"{outcome.name:14} {what:42} {outcome.runs:>9}  {outcome.coverage:32} "
            f"{outcome.finding}"
        )
        for path in outcome.reproducers:
            print(f"{'':14} reproducer: {path}")
    return 1 if any(o.finding != "nothing" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
