# SPDX-License-Identifier: MIT
#
# The layer's layering, read from the sources with ast: pure modules import
# nothing of bitbake's, and what bitbake imports at build time (the top of
# the package) does not reach into the tools (server/, client/, doctor/).

import functools
import json
import os
import subprocess
import sys

import pytest

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lib")
PACKAGE = os.path.join(LIB, "equivcache")
BITBAKE = {"bb", "oe", "hashserv", "prserv", "bblayers"}
TOOLS = {"equivcache.server", "equivcache.client", "equivcache.doctor"}

# The adapters: they run inside bitbake (the handler, the class's two
# handlers) or drive it (the doctor, the hashserv endpoints). Everything else
# is pure, and plain pytest exercises it without bitbake.
ADAPTERS = {
    "siggen.py",
    "hashclient.py",
    "configcheck.py",
    "buildreport.py",
    "sstatecheck.py",
    "buildpublish.py",
    "doctor/command.py",
    "server/endpoints.py",
}


def modules():
    found = []
    for top, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(top, name), PACKAGE))
    return sorted(found)


_READ_IMPORTS = r"""
import ast, json, os, sys
found = {}
for relpath in sys.argv[2:]:
    with open(os.path.join(sys.argv[1], relpath)) as f:
        tree = ast.parse(f.read(), relpath)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    found[relpath] = sorted(names)
json.dump(found, sys.stdout)
"""


@functools.lru_cache(maxsize=None)
def all_imports():
    """{module: every module name an import statement of it names, anywhere in it}. Read by a
    fresh interpreter: CPython 3.11's ast.parse can fail with "AST constructor recursion depth
    mismatch" deep inside a long pytest run's stack."""
    out = subprocess.run([sys.executable, "-c", _READ_IMPORTS, PACKAGE] + modules(),
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return {k: set(v) for k, v in json.loads(out).items()}


def imports(relpath):
    return all_imports()[relpath]


def top(name):
    return name.split(".")[0]


@pytest.mark.parametrize("relpath", [m for m in modules() if m not in ADAPTERS])
def test_pure_modules_import_no_bitbake(relpath):
    assert not {n for n in imports(relpath) if top(n) in BITBAKE}, relpath


@pytest.mark.parametrize("relpath", sorted(ADAPTERS))
def test_each_adapter_needs_bitbake(relpath):
    """The list of adapters stays minimal: each one really imports bitbake's code."""
    assert {n for n in imports(relpath) if top(n) in BITBAKE}, relpath


@pytest.mark.parametrize("relpath", [m for m in modules() if os.sep not in m])
def test_build_time_modules_stay_out_of_the_tools(relpath):
    """The top of the package (what bitbake imports, BBIMPORTS) uses no tool package."""
    assert not {n for n in imports(relpath) if any(n == t or n.startswith(t + ".") for t in TOOLS)}, relpath
