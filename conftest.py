"""Hypothesis profiles for every test folder of the repository, chosen by ``HYPOTHESIS_PROFILE``.

pytest loads this file for any test under the repository root (the root
``pyproject.toml`` holds the pytest settings, so the root is the rootdir even
when pytest runs from a package folder). Property tests set only what is
particular to them (usually ``max_examples``); how random, how patient and how
thorough a run is comes from the profile:

* ``ci`` (default): randomized, so every run explores new examples; no
  per-example deadline, because a loaded two-core machine can stall any
  example for a second and a deadline there only makes flakes; no example
  database, so nothing is written into the checkout. A failure prints the
  ``@reproduce_failure`` blob that replays it.
* ``dev``: randomized, a local example database that replays past failures
  first, fewer examples for a quick loop.
* ``fuzz``: many examples per test for a long, explorative run
  (``HYPOTHESIS_PROFILE=fuzz nox -s tests -- -k properties``).
"""

from __future__ import annotations

import importlib.util
import os

PROFILE_ENV = "HYPOTHESIS_PROFILE"
PROFILES = ("ci", "dev", "fuzz")


def _load_profiles() -> None:
    from hypothesis import HealthCheck, Phase, settings

    settings.register_profile(
        "ci",
        derandomize=False,
        deadline=None,
        database=None,
        print_blob=True,
        max_examples=100,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("dev", derandomize=False, deadline=None, max_examples=30)
    settings.register_profile(
        "fuzz",
        derandomize=False,
        deadline=None,
        database=None,
        print_blob=True,
        max_examples=20_000,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    _chosen = os.environ.get(PROFILE_ENV, "ci")
    if _chosen not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={_chosen!r} is not one of {', '.join(PROFILES)}")
    settings.load_profile(_chosen)


# Suites that use no property tests (the container smoke tests) run without hypothesis.
if importlib.util.find_spec("hypothesis") is not None:
    _load_profiles()
