# SPDX-License-Identifier: MIT
#
# The layer's layering, read from the sources with ast: pure modules import
# nothing of bitbake's; what bitbake imports at build time (the top of the
# package) does not reach into the tools (server/, client/, doctor/); the
# server's sub-packages import only those below them; no import circle
# anywhere; no function over 80 lines, no module over 400.

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
    "cachedescriptor.py",
    "capabilities.py",
    "buildreport.py",
    "sstatecheck.py",
    "buildpublish.py",
    "doctor/command.py",
    "server/hashequiv/processes.py",
}

# What each part of server/ may import of server/ (server/__init__.py is the map).
SERVER_PARTS = {
    "hashequiv": {"hashequiv"},
    "store": {"hashequiv", "store"},
    "http": {"hashequiv", "store", "http"},
    "producer": {"hashequiv", "store", "producer"},
    "options": {"store"},
    "commands": {"hashequiv", "store", "http", "producer", "options", "commands"},
    "command": {"commands", "options"},
}

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
# No exception: a module or function over its bound is cut, not listed.
LONG_MODULES = set()
LONG_FUNCTIONS = set()


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


def server_part(relpath):
    """The part of server/ a module belongs to ("store", "command"...), None outside server/."""
    parts = relpath.split(os.sep)
    if parts[0] != "server" or relpath == os.path.join("server", "__init__.py"):
        return None
    return parts[1] if len(parts) > 2 else parts[1][:-len(".py")]


@pytest.mark.parametrize("relpath", [m for m in modules() if server_part(m)])
def test_server_parts_import_only_those_below(relpath):
    allowed = SERVER_PARTS[server_part(relpath)]
    used = {n.split(".")[2] for n in imports(relpath) if n.startswith("equivcache.server.") and n.count(".") >= 2}
    assert used <= allowed, "%s imports server/%s" % (relpath, ", server/".join(sorted(used - allowed)))


def test_every_server_part_is_mapped():
    parts = {server_part(m) for m in modules() if server_part(m)}
    assert parts == set(SERVER_PARTS), parts ^ set(SERVER_PARTS)


def module_graph():
    """{module name: module names of the package it imports}, lazy imports included."""
    names = {"equivcache." + m[:-len(".py")].replace(os.sep, ".").replace(".__init__", ""): m for m in modules()}
    names["equivcache"] = names.pop("equivcache.__init__", "__init__.py")
    graph = {}
    for name, relpath in names.items():
        targets = set()
        for imported in imports(relpath):
            # "equivcache.server.store.cache.Cache" is the module equivcache.server.store.cache;
            # "equivcache.server.store" (from ... import cache) the package's __init__.
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circle():
    graph = module_graph()
    state, circles = {}, []

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def lib_files():
    root = os.path.dirname(PACKAGE)
    for top, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(top, name), root)


def test_no_long_module():
    root = os.path.dirname(PACKAGE)
    long = set()
    for relpath in lib_files():
        with open(os.path.join(root, relpath)) as f:
            if len(f.read().splitlines()) > MAX_MODULE_LINES:
                long.add(relpath)
    assert long == LONG_MODULES, "over %d lines: %s; no longer: %s" % (
        MAX_MODULE_LINES, sorted(long - LONG_MODULES), sorted(LONG_MODULES - long))


_LONG_FUNCTIONS = r"""
import ast, json, os, sys
found = []
for relpath in sys.argv[3:]:
    with open(os.path.join(sys.argv[1], relpath)) as f:
        tree = ast.parse(f.read(), relpath)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.end_lineno - node.lineno + 1 > int(sys.argv[2]):
                found.append([relpath, node.name])
json.dump(found, sys.stdout)
"""


def test_no_long_function():
    """Read by a fresh interpreter, as all_imports() is."""
    root = os.path.dirname(PACKAGE)
    out = subprocess.run([sys.executable, "-c", _LONG_FUNCTIONS, root, str(MAX_FUNCTION_LINES)] + list(lib_files()),
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    long = {tuple(f) for f in json.loads(out)}
    assert long == LONG_FUNCTIONS, "over %d lines: %s; no longer: %s" % (
        MAX_FUNCTION_LINES, sorted(long - LONG_FUNCTIONS), sorted(LONG_FUNCTIONS - long))
