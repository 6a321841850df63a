"""``nox -s dev`` really federates: real ``wanfed agent`` and ``wanfed gateway`` processes.

Runs the launcher in its non-interactive mode: it starts dc1 and dc2 on
loopback (dc2 knowing only ``primary_gateways``), waits until dc2 sees every
server alive and answers a ``?dc=dc1`` query, runs the three sample commands,
and stops everything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[1] / "tools" / "dev" / "devfed.py"


def test_local_federation_comes_up_answers_and_stops() -> None:
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), "--check", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    out = result.stdout
    assert "federated in" in out
    assert "s1.dc1" in out
    assert "s1.dc2" in out
    assert '"consul"' in out  # the ?dc=dc1 catalog answer, fetched in dc2
    assert "Datacenter: dc2 (primary: dc1)" in out
    leftovers = subprocess.run(
        ["pgrep", "-f", "wanfed-dev-"], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == "", "processes of the local federation left running"
