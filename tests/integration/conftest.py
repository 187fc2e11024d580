# Shared pytest fixtures for the integration tests: a private bus with the mock BlueZ on it.
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mockbluez import MockBluez  # noqa: E402
from test_ble_helpers import Gateway  # noqa: E402


@pytest.fixture
def bus():
    """A private system-like bus running kneewrap-mock-bluez (real time); .address, .mock, .stop()."""
    b = MockBluez()
    yield b
    b.stop()


@pytest.fixture
def fast_bus():
    """The same, with the wraps' firmware at KNEEWRAP_TIME_SCALE=100 (a 60 s session lasts 0.6 s)."""
    b = MockBluez(time_scale=100)
    yield b
    b.stop()


@pytest.fixture
def gw(fast_bus, tmp_path):
    """Makes kneewrapd gateways (test_ble_helpers.Gateway) on fast_bus; each is closed after the test."""
    made = []

    def make(**kw):
        g = Gateway(fast_bus, tmp_path, **kw)
        made.append(g)
        return g.start()
    yield make
    for g in made:
        g.close()
