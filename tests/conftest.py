# SPDX-License-Identifier: MIT
#
# pytest set-up: the layer's lib/ for every test; poky's bitbake and OE-core
# libraries (POKY_DIR, as tests/run and the README document) for the
# integration tests, which need the real bitbake and bitbake-hashserv.

import os
import sys

LAYERDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POKY_DIR = os.environ.get("POKY_DIR", "/opt/yocto/poky-yocto-5.0.15")

sys.path.insert(0, os.path.join(LAYERDIR, "lib"))
