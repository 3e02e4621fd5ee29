# SPDX-License-Identifier: MIT
#
# The layer's layering, read from the sources with ast: pure modules import
# nothing of bitbake's, and what bitbake imports at build time (the top of
# the package) does not reach into the tools (server/, client/, doctor/).

import ast
import os

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
    "configcheck.py",
    "buildreport.py",
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


def imports(relpath):
    """Every module name an import statement of the file names, anywhere in it."""
    with open(os.path.join(PACKAGE, relpath)) as f:
        tree = ast.parse(f.read(), relpath)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    return names


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
