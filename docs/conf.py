# SPDX-License-Identifier: MIT
#
# Sphinx configuration of meta-equivcache's documentation: a user guide, a
# reference generated from the code where it can be (the command lines from
# the scripts' parsers, the rules from the rule registry, the variables from
# the class's [doc] flags, the formats from their JSON schemas) and a
# developer guide. Built by the test suite with warnings as errors:
#   python3 -m sphinx -W --keep-going -b html docs BUILD/html

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
LAYER = os.path.dirname(DOCS)
sys.path.insert(0, os.path.join(LAYER, "lib"))
sys.path.insert(0, os.path.join(DOCS, "_ext"))

project = "meta-equivcache"
author = "the meta-equivcache developers"
copyright = "the meta-equivcache developers, MIT licence"

extensions = ["myst_parser", "sphinxarg.ext", "equivcache_docs"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
html_theme = "sphinx_rtd_theme"
html_static_path = []
# Nothing from anywhere else: no web fonts, no search beacons.
html_show_sourcelink = False
nitpicky = True
# Options, messages and help as the scripts print them: "--to", not an en dash; straight quotes.
smartquotes = False
