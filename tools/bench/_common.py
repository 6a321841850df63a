"""What every benchmark needs and none should write again.

* :func:`percentile` — one definition of p50/p99 for every table, so that
  two benchmarks' p99 mean the same thing (nearest rank, no interpolation);
* :func:`ratio`, :class:`Table` and :func:`print_table` — the "ours beside the baseline"
  tables, columns sized once;
* :func:`write_pki` — certificates from the project's own ``wanfed_agent.tls``
  (the ones agents use), written as PEM files for processes and contexts;
* :func:`free_port`, :func:`loop_factories`, :func:`run`,
  :func:`wait_for_stdin_eof` — the plumbing of child processes and loops.

Benchmarks import this as a sibling module (each runs as
``python tools/bench/<name>.py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


# --- numbers ------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.5 = p50, 0.99 = p99) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"percentile fraction {fraction} is not within 0..1")
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def ratio(value: float, base: float | None, digits: int = 2) -> str:
    """``value / base`` as text, ``n/a`` when there is no baseline to divide by."""
    return f"{value / base:.{digits}f}" if base else "n/a"


@dataclass(frozen=True)
class Column:
    """One column of a results table: its title, width and how values are formatted."""

    title: str
    width: int
    spec: str = ""
    """Format spec applied to non-string values, e.g. ``,.0f`` or ``.3f``."""
    align: str = ">"


class Table:
    """Rows printed as they are measured, under a header printed once."""

    def __init__(
        self, columns: Sequence[Column], *, sep: str = " ", indent: str = "", rule: bool = True
    ) -> None:
        self.columns = list(columns)
        self.sep = sep
        self.indent = indent
        self.rule = rule

    def print_header(self) -> None:
        header = self.sep.join(f"{c.title:{c.align}{c.width}}" for c in self.columns).rstrip()
        print(self.indent + header)
        if self.rule:
            print(self.indent + "-" * len(header))

    def format_row(self, values: Sequence[object]) -> str:
        cells = []
        for column, value in zip(self.columns, values, strict=True):
            text = value if isinstance(value, str) else format(value, column.spec)
            cells.append(f"{text:{column.align}{column.width}}")
        return self.indent + self.sep.join(cells).rstrip()

    def print_row(self, values: Sequence[object]) -> None:
        print(self.format_row(values), flush=True)


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[object]],
    *,
    sep: str = " ",
    indent: str = "",
    rule: bool = True,
) -> None:
    """A header, a rule as wide as the header, then one line per row."""
    table = Table(columns, sep=sep, indent=indent, rule=rule)
    table.print_header()
    for row in rows:
        table.print_row(row)


def print_against_baseline(
    unit: str,
    rows: Sequence[tuple[str, float]],
    *,
    spec: str = ",.0f",
    ratio_title: str = "×baseline",
    label_width: int = 42,
) -> None:
    """Indented ``label value ×first-row`` lines: the first row is the baseline."""
    base = rows[0][1]
    print_table(
        [Column("what", label_width, align="<"), Column(unit, 10, spec), Column(ratio_title, 10)],
        [[label, value, ratio(value, base)] for label, value in rows],
        indent="  ",
    )


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of one CA, a server leaf and a client leaf, all signed by that CA."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def at(cls, directory: Path) -> Pki:
        """Where :func:`write_pki` puts the files (a child process finds them again here)."""
        return cls(
            ca=directory / "ca.pem",
            cert=directory / "server.pem",
            key=directory / "server-key.pem",
            client_cert=directory / "client.pem",
            client_key=directory / "client-key.pem",
        )

    @property
    def server(self) -> tuple[Path, Path, Path]:
        """``(ca, cert, key)`` in the order ``server_context``/``client_context`` take them."""
        return self.ca, self.cert, self.key

    @property
    def client(self) -> tuple[Path, Path, Path]:
        return self.ca, self.client_cert, self.client_key


def write_pki(directory: Path, dc: str = "dc1", node: str | None = None) -> Pki:
    """A fresh CA, a server certificate for ``dc`` (and ``node``), and a client one.

    The server leaf names ``[<node>.]server.<dc>.consul`` and 127.0.0.1 and may
    act as client too (the agents' certificates carry both usages), so a
    benchmark whose two ends are servers needs only that one.
    """
    from wanfed_agent.tls import create_ca, create_client_cert, create_server_cert

    directory.mkdir(parents=True, exist_ok=True)
    ca = create_ca()
    server = create_server_cert(ca, dc, node=node)
    client = create_client_cert(ca, dc)
    pki = Pki.at(directory)
    pki.ca.write_bytes(ca.cert_pem)
    pki.cert.write_bytes(server.cert_pem)
    pki.key.write_bytes(server.key_pem)
    pki.client_cert.write_bytes(client.cert_pem)
    pki.client_key.write_bytes(client.key_pem)
    return pki


# --- processes and loops --------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (a child process binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop (what agents run on) when installed, then plain asyncio."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    try:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        print("uvloop is not installed: measuring asyncio only", file=sys.stderr)
    factories["asyncio"] = asyncio.new_event_loop
    return factories


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the loop agents use: uvloop when installed."""
    factory = next(iter(loop_factories().values()))
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def wait_for_stdin_eof() -> None:
    """Children live until the parent closes their stdin (or dies)."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
