"""Reliability suites: the marker, and the sabotage switches for in-process suites.

Short mode (default, CI) versus long mode (``ROOMKEY_LONG=1`` or
``scripts/reliability.sh --long``): see :mod:`harness.modes`.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: a proof suite of tests/reliability (short mode unless "
        "ROOMKEY_LONG=1)"
    )


@pytest.fixture(autouse=True, scope="session")
def _sabotage_in_process() -> None:
    """In-process suites: apply the sabotage switches of ``ROOMKEY_SABOTAGE`` (if any) to
    roomkey's modules in this test process (subprocess suites apply them in the child)."""
    from harness.modes import SABOTAGE
    from harness.sabotage import apply_all

    if SABOTAGE:
        apply_all()
