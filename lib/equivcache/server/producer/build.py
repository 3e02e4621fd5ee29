# SPDX-License-Identifier: MIT
#
# What publish reads of a producer's build: its SSTATE_DIR, DL_DIR,
# STAMPS_DIR, TMPDIR and hash equivalence database as bitbake resolves them
# (local.conf, site.conf, auto.conf, bitbake-setup's trees: bitbake's own
# configuration parse, through tinfoil, in a child process), the files of
# each that a cache takes, and the build configuration bitbake printed
# (the descriptor's "producer"). No bb import in this process.

import json
import os
import re
import subprocess
import sys

from equivcache import descriptor as desc, durations, names
from equivcache.cli import Failure, UsageError, layer_dir
from equivcache.formatting import utc_iso
from equivcache.server.store.local import download_files

VARIABLES = ("TMPDIR", "SSTATE_DIR", "DL_DIR", "STAMPS_DIR", "BUILDSTATS_BASE")
RESOLVE_TIMEOUT = 300

# Run by the host's python in the build directory: bitbake's configuration
# parse only (no recipe); the variables, and the auto server's database as
# the class computes it ("database"), as JSON on stdout.
_RESOLVE = """
import json, sys
sys.path[:0] = sys.argv[1:3]
import bb.tinfoil
from equivcache.autoserver import auto_database_path
with bb.tinfoil.Tinfoil(output=sys.stderr) as tinfoil:
    tinfoil.logger.setLevel("WARNING")
    tinfoil.prepare(config_only=True, quiet=2)
    values = {name: tinfoil.config_data.getVar(name) for name in sys.argv[3:]}
    values["database"] = auto_database_path(tinfoil.config_data)
sys.stdout.write("EQUIVCACHE-VARIABLES " + json.dumps(values) + "\\n")
"""


def bitbake_variables(bitbake, builddir, variables=VARIABLES):
    """{variable: value} of a build directory's configuration, as bitbake parses it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BB")}
    env.update(BBPATH=builddir, BUILDDIR=builddir,
               PATH=os.path.join(bitbake, "bin") + os.pathsep + env.get("PATH", "/usr/bin:/bin"))
    try:
        result = subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                                 "-c", _RESOLVE, os.path.join(bitbake, "lib"),
                                 os.path.join(layer_dir(), "lib"), *variables],
                                cwd=builddir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                errors="replace", timeout=RESOLVE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure("bitbake did not parse the configuration of %s within %d s" % (builddir, RESOLVE_TIMEOUT))
    for line in result.stdout.splitlines():
        if line.startswith("EQUIVCACHE-VARIABLES "):
            return json.loads(line.split(" ", 1)[1])
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line] or lines[-3:]
    raise UsageError("bitbake cannot read the configuration of %s: %s (pass --sstate-dir, --downloads-dir, "
                     "--stamps-dir and --hashserv-db instead)" % (builddir, " | ".join(errors) or "no output"))


class ProducerPaths:
    """Where a producer's build keeps what a cache takes."""

    def __init__(self, sstate_dir, downloads_dir, stamps_dirs, hashserv_db, tmpdirs, buildstats_dirs=()):
        self.sstate_dir = sstate_dir
        self.downloads_dir = downloads_dir
        self.stamps_dirs = stamps_dirs
        self.hashserv_db = hashserv_db
        self.tmpdirs = tmpdirs
        self.buildstats_dirs = list(buildstats_dirs)

    def durations(self, producer, measured=None):
        """{(recipe, task, unihash): entry} of every task run the producer's
        buildstats and signature data name (durations.py): the cache keeps
        those of its objects' tasks and of the other tasks of their recipes."""
        when = measured or utc_iso()
        return {k: {"seconds": s, "producer": producer, "measured": when}
                for k, s in durations.measure(self.buildstats_dirs, self.stamps_dirs).items()}

    def say_durations(self, found, out):
        if found:
            objects = {(r, t, u) for _, _, (r, t, u, kind) in names.sstate_files(self.sstate_dir) if kind == "object"}
            with_object = len(set(found) & objects)
            out.write("durations: %d tasks timed by the producer's buildstats (%d with an sstate object, %d that "
                      "restoring their recipe's objects spares)\n" % (len(found), with_object, len(found) - with_object))
        elif not any(os.path.isdir(p) for p in self.buildstats_dirs):
            out.write("durations: no buildstats at %s (USER_CLASSES += \"buildstats\" in the producer, or pass "
                      "--buildstats-dir): consumers will not know what the cache saved them\n"
                      % (", ".join(self.buildstats_dirs) or "TMPDIR/buildstats"))
        else:
            out.write("durations: none of the producer's buildstats match its sstate objects\n")

    def files(self):
        """(area, [(relative path, size)], source directory, what) of each tree to publish, objects first."""
        yield "sstate-cache", [(rel, size) for rel, size, _ in names.sstate_files(self.sstate_dir)], \
            self.sstate_dir, "sstate"
        if os.path.isdir(self.downloads_dir):
            yield "downloads", list(download_files(self.downloads_dir)), self.downloads_dir, "downloads"
        for stamps in self.stamps_dirs:
            yield "siginfo", [(rel, size) for rel, size, _ in names.sigdata_files(stamps)], stamps, "signatures"

    def say_absent(self, out):
        if not os.path.isdir(self.downloads_dir):
            out.write("downloads: none at %s (pass --downloads-dir with the producer's DL_DIR)\n" % self.downloads_dir)
        if not self.stamps_dirs:
            out.write("signatures: no STAMPS_DIR found (pass --stamps-dir with the producer's STAMPS_DIR)\n")


def producer_paths(bitbake, builddir, sstate_dir=None, downloads_dir=None, stamps_dirs=None, hashserv_db=None,
                   out=None, buildstats_dirs=None):
    """The producer's paths: those given, the others as bitbake resolves them
    for a build directory (one with conf/local.conf), else the defaults
    under BUILDDIR (sstate-cache/, downloads/, tmp*/stamps, tmp*/buildstats, cache/hashserv.db)."""
    if not os.path.isdir(builddir):
        raise UsageError("--from %s: no such build directory" % builddir)
    builddir = os.path.abspath(builddir)
    given = [sstate_dir, downloads_dir, stamps_dirs, hashserv_db]
    tmpdirs = sorted(os.path.join(builddir, n) for n in os.listdir(builddir)
                     if n.startswith("tmp") and os.path.isdir(os.path.join(builddir, n)))
    if all(given) or not os.path.isfile(os.path.join(builddir, "conf", "local.conf")):
        resolved = {}
    else:
        resolved = bitbake_variables(bitbake, builddir)
        if out is not None:
            out.write("producer: %s: SSTATE_DIR %s, DL_DIR %s, STAMPS_DIR %s (as bitbake resolves them)\n" % (
                builddir, resolved["SSTATE_DIR"], resolved["DL_DIR"], resolved["STAMPS_DIR"]))
        tmpdirs = [resolved["TMPDIR"]]
    sstate_dir = os.path.abspath(sstate_dir or resolved.get("SSTATE_DIR") or os.path.join(builddir, "sstate-cache"))
    if not os.path.isdir(sstate_dir):
        raise UsageError("no sstate cache at %s (pass --sstate-dir with the producer's SSTATE_DIR)" % sstate_dir)
    downloads_dir = os.path.abspath(downloads_dir or resolved.get("DL_DIR") or os.path.join(builddir, "downloads"))
    hashserv_db = os.path.abspath(hashserv_db or resolved.get("database")
                                  or os.path.join(builddir, "cache", "hashserv.db"))
    if stamps_dirs:
        stamps = [os.path.abspath(p) for p in stamps_dirs]
        for path in stamps:
            if not os.path.isdir(path):
                raise UsageError("--stamps-dir %s: no such directory" % path)
    elif resolved.get("STAMPS_DIR"):
        stamps = [resolved["STAMPS_DIR"]] if os.path.isdir(resolved["STAMPS_DIR"]) else []
    else:
        stamps = [os.path.join(t, "stamps") for t in tmpdirs if os.path.isdir(os.path.join(t, "stamps"))]
    if buildstats_dirs:
        buildstats = [os.path.abspath(p) for p in buildstats_dirs]
    elif resolved.get("BUILDSTATS_BASE"):
        buildstats = [resolved["BUILDSTATS_BASE"]]
    else:
        buildstats = [os.path.join(t, "buildstats") for t in tmpdirs]
    return ProducerPaths(sstate_dir, downloads_dir, stamps, hashserv_db, tmpdirs, buildstats)


_CONFIG_LINE = re.compile(r'^(\S+)\s*=\s*"(.*)"\s*$')
_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def parse_build_configuration(text):
    """The "Build Configuration:" block bitbake prints at the start of a build
    (and keeps in tmp/log/cooker/MACHINE/*.log): ({VARIABLE: value},
    [{"name": layer, "revision": "branch:revision"}]). The variables come
    first (upper-case names, BUILDCFG_VARS: which ones differs between
    releases), then the layers; several layers on one revision are listed
    one per line, the value on the last. ({}, []) if absent."""
    values, layers, pending = {}, [], []
    lines = text.splitlines()
    try:
        start = lines.index("Build Configuration:")
    except ValueError:
        return values, layers
    for line in lines[start + 1:]:
        line = line.rstrip()
        if not line.strip():
            break
        m = _CONFIG_LINE.match(line)
        if m and not layers and not pending and _VARIABLE.match(m.group(1)):
            values[m.group(1)] = m.group(2)
        elif m:
            for name in pending + [m.group(1)]:
                layers.append({"name": name, "revision": m.group(2)})
            pending = []
        elif re.match(r"^\S+$", line.strip()):
            pending.append(line.strip())
        else:
            break
    return values, layers


def newest_build_configuration(tmpdirs):
    """parse_build_configuration() of the newest cooker log of the TMPDIRs
    of a build, with the log's path; None if none."""
    logs = []
    for tmpdir in tmpdirs:
        cooker = os.path.join(tmpdir, "log", "cooker")
        for top, _, files in os.walk(cooker):
            logs.extend(os.path.join(top, f) for f in files if f.endswith(".log"))
    for path in sorted(logs, key=lambda p: os.path.getmtime(p), reverse=True):
        with open(path, errors="replace") as f:
            values, layers = parse_build_configuration(f.read(65536))
        if values:
            return values, layers, path
    return None


def producer_of(found):
    """The descriptor's "producer" from newest_build_configuration()'s answer, or None."""
    if not found:
        return None
    values, layers, _ = found
    producer = {k: values[k] for k in desc.PRODUCER_KEYS if k in values}
    producer["layers"] = layers
    return producer
