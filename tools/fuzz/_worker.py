"""One fuzz target in its own process: ``python -m tools.fuzz._worker TARGET SECONDS OUT ENGINE``.

atheris (libFuzzer) ends the process when it is done, so each target runs in a
process of its own and reports through its exit code, its output and the
files it leaves in ``OUT/<target>/``: ``corpus/`` (inputs that reached new
code), ``crash-*`` / ``timeout-*`` (reproducers) and ``result.json``.

Engines:

* ``atheris``: coverage-guided. Our packages are instrumented on import;
  libFuzzer mutates the corpus towards new branches; an input that raises
  an unexpected exception is a crash, one that runs longer than
  ``PER_INPUT_DEADLINE`` seconds is a timeout (a decoder without a deadline).
* ``hypothesis``: where atheris does not install. Random and mutated-seed
  inputs from hypothesis for the same time, without coverage guidance.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

PER_INPUT_DEADLINE = 10
"""Seconds one input may take before libFuzzer reports it as a timeout."""
MAX_LEN = 8192
"""Longest input tried: enough for nesting past the interpreter's recursion limit."""
INSTRUMENTED = ["wanfed_proto", "wanfed_fsm", "wanfed_agent", "wanfed_server"]


def _prepare(name: str, out: Path) -> tuple[Callable[[bytes], None], Path]:
    from ._targets import TARGETS, with_repetition

    target = TARGETS[name]
    corpus = out / name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    run = with_repetition(target.run)
    for index, seed in enumerate(target.all_seeds()):
        (corpus / f"seed-{index}").write_bytes(seed)
        run(seed)  # imports what the target needs, and seeds must pass
    return run, corpus


def _run_atheris(name: str, seconds: int, out: Path) -> None:
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    with atheris.instrument_imports(include=INSTRUMENTED):
        run, corpus = _prepare(name, out)
    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-timeout={PER_INPUT_DEADLINE}",
        f"-max_len={MAX_LEN}",
        f"-artifact_prefix={out / name}/",
        "-print_final_stats=1",
        "-len_control=0",  # long inputs from the start: nesting needs about a kilobyte
        "-rss_limit_mb=2048",
        str(corpus),
    ]
    atheris.Setup(args, run)
    atheris.Fuzz()


def _run_hypothesis(name: str, seconds: int, out: Path) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from ._targets import TARGETS

    run, _ = _prepare(name, out)
    seeds = TARGETS[name].all_seeds()

    def mutate(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(seed)
        for kind, position, value in edits:
            at = position % (len(data) + 1)
            if kind == 0 and at < len(data):
                data[at] = value
            elif kind == 1:
                data.insert(at, value)
            elif at < len(data):
                del data[at]
        return bytes(data)

    edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, MAX_LEN), st.integers(0, 255)))
    inputs = st.one_of(
        st.binary(max_size=MAX_LEN),
        st.builds(mutate, st.sampled_from(seeds), edits),
    )
    tried = 0
    deadline = time.monotonic() + seconds
    crash: bytes | None = None

    @settings(
        max_examples=2_000,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def check(data: bytes) -> None:
        nonlocal tried, crash
        tried += 1
        try:
            run(data)
        except BaseException:
            crash = data
            raise

    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        try:
            check()
        except BaseException as error:
            digest = f"{random.getrandbits(64):016x}"
            path = out / name / f"crash-{digest}"
            path.write_bytes(crash or b"")
            print(f"crash: {type(error).__name__}: {error}; reproducer {path}", flush=True)
            break
    (out / name / "result.json").write_text(json.dumps({"runs": tried, "rounds": rounds}))
    print(f"Done {tried} runs in {seconds} second(s)", flush=True)
    sys.exit(1 if crash is not None else 0)


def main() -> None:
    name, seconds, out, engine = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    if engine == "atheris":
        _run_atheris(name, seconds, out)
    else:
        _run_hypothesis(name, seconds, out)


if __name__ == "__main__":
    main()
