"""What a ``wanfed`` command loads: only what that command needs.

Every command builds the whole parser, so a heavy import at the top of one
command module (the server runtime, aiohttp, the gateway data plane, the
X.509 stack) would be paid by all of them. These tests pin which modules a
fresh interpreter holds after a command line is parsed; they count modules,
not seconds, so they cannot flake on a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "aiohttp",
    "asyncio",
    "cryptography",
    "pysyncobj",
    "wanfed_fsm",
    "wanfed_gateway_locator",
    "wanfed_server.gateway",
    "wanfed_server.http",
    "wanfed_server.runtime",
)

_PROBE = """
import json, sys
from wanfed_server.cli import build_parser
args = sys.argv[1:]
if args:
    build_parser().parse_args(args)
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def loaded_after(*argv: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after parsing ``wanfed <argv>``."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("members", "-wan"),
        ("info",),
        ("federation", "routes"),
        ("federation", "states"),
        ("keygen",),
        ("agent", "-dev"),
        ("gateway", "-address", "127.0.0.1"),
    ],
    ids=lambda argv: " ".join(argv) or "import",
)
def test_parsing_a_command_line_loads_nothing_heavy(argv: tuple[str, ...]) -> None:
    assert loaded_after(*argv) == []


def test_the_tls_commands_load_the_x509_code_and_nothing_else() -> None:
    """The probe can see a heavy import: ``tls`` flags take their defaults from it."""
    assert loaded_after("tls", "ca", "create") == ["cryptography"]


def test_wanfed_agent_config_loads_no_x509_code() -> None:
    probe = "import sys, wanfed_agent.config; print('cryptography' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_lazy_package_names_still_resolve() -> None:
    import wanfed_agent
    import wanfed_agent.tls

    assert wanfed_agent.load_config.__module__ == "wanfed_agent.config._loader"
    assert wanfed_agent.TLSMaterial is wanfed_agent.tls.TLSMaterial
    assert wanfed_agent.tls.DEFAULT_CA_DAYS > wanfed_agent.tls.DEFAULT_CERT_DAYS > 0
    assert set(wanfed_agent.tls.__all__) <= set(dir(wanfed_agent.tls))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = wanfed_agent.tls.nope  # type: ignore[attr-defined]


def test_deferred_tls_subcommands_show_in_help_and_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wanfed_server.cli import main

    assert main(["tls", "-h"]) == 0
    out = capsys.readouterr().out
    assert "ca        certificate authority" in out
    assert "cert      agent certificates" in out
    assert main(["tls", "ca", "create", "-h"]) == 0
    assert "validity in days (default 1825)" in capsys.readouterr().out
    assert main(["tls"]) == 1
    assert "cert      agent certificates" in capsys.readouterr().err
