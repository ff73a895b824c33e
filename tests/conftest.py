"""Test-wide options: real instruments are given with --resource NAME=VISA_RESOURCE.

Tests marked `hardware` run only when the resources they need are given, e.g.
`pytest -m hardware --resource potentiostat=GPIB0::24::INSTR --resource camera=TCPIP0::gif-pc::48890::SOCKET`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # shipped_protocol, ramp_camera (the tests are not a package)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--resource",
        action="append",
        default=[],
        metavar="NAME=RESOURCE",
        help="real instrument for hardware tests: potentiostat=..., camera=..., tem=...",
    )


def _resources(config: pytest.Config) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in config.getoption("--resource"):
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise pytest.UsageError(f"--resource {item!r}: expected NAME=RESOURCE, e.g. potentiostat=GPIB0::24::INSTR")
        out[name.strip()] = value.strip()
    return out


@pytest.fixture(scope="session")
def hardware_resources(request: pytest.FixtureRequest) -> dict[str, str]:
    """Resources given on the command line (empty when none)."""
    return _resources(request.config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    given = _resources(config)
    for item in items:
        marker = item.get_closest_marker("hardware")
        if marker is None:
            continue
        needed = marker.args or ("potentiostat",)
        missing = [n for n in needed if n not in given]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"hardware test: give --resource {missing[0]}=..."))
