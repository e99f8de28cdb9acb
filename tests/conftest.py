"""Suite-wide options (``--run-slow`` turns on the tests marked ``slow``) and fixtures."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from instantroom.testing import RelayProcess, assert_exited_cleanly, running_relay


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (about a minute more)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes long; runs only with --run-slow")
    # pytest-asyncio is not used (async tests call asyncio.run), but when it is installed
    # it warns at configure time, and filterwarnings = error turns that into a crash.
    warnings.filterwarnings(
        "ignore",
        message='The configuration option "asyncio_default_fixture_loop_scope" is unset',
        category=pytest.PytestDeprecationWarning,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def relay() -> Iterator[RelayProcess]:
    """A relay process with the default settings, on a free loopback port.

    On teardown it must exit 0 on SIGTERM and have logged no crash.
    """
    with running_relay() as process:
        yield process
    assert_exited_cleanly(process)


@pytest.fixture(autouse=True)
def _no_relay_clock_remembered() -> None:
    """What relays said of this clock is remembered per process (by relay URL): a test's
    relay must not pass its clock to a later test's relay that got the same port."""
    from instantroom.client import connection

    connection._clock_offsets.clear()
