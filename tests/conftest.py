# SPDX-License-Identifier: MIT
#
# pytest set-up: the layer's lib/ for every test (the pure modules and the
# shared test helpers, lib/oeqa/utils/equivcache.py); bitbake's and
# OE-core's libraries of the release tree POKY_DIR (as tests/run and the
# README document) for the integration tests, which call need_bitbake().

import os
import sys

import pytest

LAYERDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(LAYERDIR, "lib"))

from oeqa.utils.equivcache import add_bitbake_to_path, poky_dir  # noqa: E402
from oeqa.utils.equivcache_services import postgres_bindir  # noqa: E402

POKY_DIR = poky_dir()

# A real PostgreSQL server for a test: initdb refuses root.
needs_postgresql = pytest.mark.skipif(postgres_bindir() is None or os.getuid() == 0,
                                      reason="needs Debian's postgresql package, and a user other than root (initdb)")


def pytest_configure(config):
    # An exception raised where nobody can catch it (a coroutine finalised
    # after its event loop closed, a client left to the garbage collector)
    # fails the test it surfaces in, rather than printing after the summary.
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnraisableExceptionWarning")


def need_bitbake():
    """Put the release tree's bitbake and OE-core libraries on sys.path; a
    missing tree fails the test module (never skips it)."""
    try:
        add_bitbake_to_path(POKY_DIR)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    os.environ["POKY_DIR"] = POKY_DIR   # how the scripts find bitbake
