"""Coverage-guided fuzzing of every decoder of untrusted bytes (``nox -s fuzz``).

Never imported by the product. ``_targets.TARGETS`` names one target per decoder;
``python -m tools.fuzz`` runs them under atheris (libFuzzer) when it is
installed, else under hypothesis, for a bounded time.

Nothing here imports the product at package import: the worker must import
it inside atheris' instrumentation, or the fuzzer runs blind.
"""

__all__: list[str] = []
