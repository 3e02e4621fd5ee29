# SPDX-License-Identifier: MIT
#
# A cache directory, as equivcache-server publishes and serves it, and what
# can be read from a producer's build directory. Pure Python: no bb import.
#
#   <cache>/equivcache.json    the descriptor (served)
#   <cache>/index.json         the objects present (served)
#   <cache>/sstate-cache/      sstate objects, as SSTATE_DIR lays them out (served)
#   <cache>/downloads/         source archives, as DL_DIR has them (served)
#   <cache>/siginfo/           the signature data of every task the producers
#                              ran, as STAMPS_DIR has it (served, for equivcache-doctor)
#   <cache>/hashserv.db        the hash equivalence database (SQLite backend)
#   <cache>/server/            private, mode 0700: server.json, admin.json
#                              (mode 0600), the write socket, state.json, serve.log

import json
import os
import re
import tempfile
from datetime import datetime, timezone

INDEX = "index.json"
INDEX_FORMAT = "equivcache-index"
INDEX_VERSION = 2

# What the http mirror serves: nothing else in the cache directory.
PUBLIC = ("equivcache.json", INDEX, "sstate-cache", "downloads", "siginfo")

# The suffixes of an sstate object, of its signature data and of its signature.
_SSTATE_SUFFIXES = (".tar.zst.siginfo", ".tar.zst.sig", ".tar.zst")

# Fetcher state in DL_DIR that a mirror must not copy: locks, done stamps,
# and the VCS clones (a mirror serves their tarballs, BB_GENERATE_MIRROR_TARBALLS).
_DOWNLOAD_SKIP_DIRS = ("git2", "gitsm", "svn", "hg", "bzr", "cvs", "repo", "npm2", "crate", "gomod")
_DOWNLOAD_SKIP_SUFFIXES = (".lock", ".done", ".tmp")


class Layout:
    """The paths of one cache directory."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.descriptor = os.path.join(self.root, "equivcache.json")
        self.index = os.path.join(self.root, INDEX)
        self.sstate = os.path.join(self.root, "sstate-cache")
        self.downloads = os.path.join(self.root, "downloads")
        self.siginfo = os.path.join(self.root, "siginfo")
        self.database = os.path.join(self.root, "hashserv.db")
        self.private = os.path.join(self.root, "server")
        self.config = os.path.join(self.private, "server.json")
        self.admin = os.path.join(self.private, "admin.json")
        self.socket = os.path.join(self.private, "hashserv.sock")
        self.state = os.path.join(self.private, "state.json")
        self.log = os.path.join(self.private, "serve.log")
        self.publish_lock = os.path.join(self.private, "publish.lock")

    def create(self):
        for path in (self.sstate, self.downloads, self.siginfo):
            os.makedirs(path, exist_ok=True)
        os.makedirs(self.private, mode=0o700, exist_ok=True)
        os.chmod(self.private, 0o700)


def parse_sstate_name(relpath):
    """(recipe, task, unihash, kind) of an sstate file's path relative to
    SSTATE_DIR, kind being "object", "siginfo" or "sig"; None for any other
    file. Names are sstate.bbclass's generate_sstatefn():
    [NATIVELSBSTRING/]xx/yy/sstate:PN:ARCH:PV:PR:PKGARCH:VERSION:UNIHASH_TASK.tar.zst"""
    name = os.path.basename(relpath)
    if not name.startswith("sstate:"):
        return None
    for suffix, kind in zip(_SSTATE_SUFFIXES, ("siginfo", "sig", "object")):
        if name.endswith(suffix):
            stem = name[:-len(suffix)]
            break
    else:
        return None
    fields = stem.split(":")
    if len(fields) < 8 or not fields[1]:
        return None
    unihash, sep, task = fields[-1].partition("_")
    if not sep or not unihash or not task:
        return None
    return fields[1], "do_" + task, unihash, kind


def _named_files(root, parse):
    """(relative path, size, parse(relative path)) of every regular file
    under root whose name parse() understands (it returns None for others)."""
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            parsed = parse(rel)
            if parsed is None or os.path.islink(path):
                continue
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            yield rel, size, parsed


def sstate_files(sstate_dir):
    """Every sstate file under sstate_dir: (relative path, size, parsed name)."""
    return _named_files(sstate_dir, parse_sstate_name)


def download_files(dl_dir):
    """The files of DL_DIR a mirror serves: (relative path, size)."""
    for top, dirs, files in os.walk(dl_dir):
        if top == dl_dir:
            dirs[:] = [d for d in dirs if d not in _DOWNLOAD_SKIP_DIRS]
        dirs.sort()
        for name in sorted(files):
            if name.endswith(_DOWNLOAD_SKIP_SUFFIXES) or name.startswith("."):
                continue
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            yield os.path.relpath(path, dl_dir), os.path.getsize(path)


def nativelsbstrings(sstate_dir):
    """The NATIVELSBSTRING directories of an SSTATE_DIR (native objects live under them)."""
    found = []
    try:
        names = sorted(os.listdir(sstate_dir))
    except FileNotFoundError:
        return found
    for name in names:
        if len(name) > 2 and not name.startswith(".") and os.path.isdir(os.path.join(sstate_dir, name)):
            found.append(name)
    return found


# A task's signature data in STAMPS_DIR, as bitbake's dump_sigtask() names it:
# STAMPS_DIR/MULTIMACH_TARGET_SYS/PN/[PE_]PV-PR.do_TASK.sigdata.UNIHASH
_SIGDATA = re.compile(r"^.+\.(do_[^.]+)\.sigdata\.([0-9a-f]{8,})$")


def parse_sigdata_name(relpath):
    """(recipe, task, unihash) of a sigdata file's path under STAMPS_DIR, or None."""
    parts = relpath.replace(os.sep, "/").split("/")
    m = _SIGDATA.match(parts[-1])
    if not m or len(parts) < 2:
        return None
    return parts[-2], m.group(1), m.group(2)


def sigdata_files(stamps_dir):
    """Every task signature file under a STAMPS_DIR (or the cache's siginfo/):
    (relative path, size, (recipe, task, unihash))."""
    return _named_files(stamps_dir, parse_sigdata_name)


def build_index(sstate_dir, generated=None, siginfo_dir=None):
    """The index document of what sstate_dir holds: one entry per recipe,
    task and unihash, with the path (relative to sstate-cache/) and size of
    its object ("" and 0 when only the signature data is there, as for tasks
    without an sstate object) and the path of its signature data ("" if none).
    With siginfo_dir (the cache's siginfo/), "signatures" lists the signature
    data of every task there, paths relative to siginfo/."""
    entries = {}
    for rel, size, (recipe, task, unihash, kind) in sstate_files(sstate_dir):
        if kind == "sig":
            continue
        stem = rel[:-len(".siginfo")] if kind == "siginfo" else rel
        entry = entries.setdefault(stem, {"recipe": recipe, "task": task, "unihash": unihash,
                                          "path": "", "size": 0, "siginfo": ""})
        if kind == "object":
            entry["path"], entry["size"] = rel, size
        else:
            entry["siginfo"] = rel
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "generated": generated or utc_iso(),
        "objects": [entries[stem] for stem in sorted(entries)],
        "signatures": [{"recipe": recipe, "task": task, "unihash": unihash, "path": rel}
                       for rel, _, (recipe, task, unihash) in (sigdata_files(siginfo_dir) if siginfo_dir else ())],
    }


def utc_iso(when=None):
    """when (seconds since the epoch; default: now) as an ISO 8601 UTC time."""
    moment = datetime.now(timezone.utc) if when is None else datetime.fromtimestamp(when, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def human(size):
    """A size in bytes, for people: 512 B, 1.5 KiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0


def write_atomic(path, text, mode=0o644):
    """Replace path with text so that a reader sees the old or the new file, never a part."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, doc, mode=0o644):
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n", mode)


_CONFIG_LINE = re.compile(r'^(\S+)\s*=\s*"(.*)"\s*$')


def parse_build_configuration(text):
    """The "Build Configuration:" block bitbake prints at the start of a build
    (and keeps in tmp/log/cooker/MACHINE/*.log): ({VARIABLE: value},
    [{"name": layer, "revision": "branch:revision"}]). Several layers on one
    revision are listed one per line, the value on the last. ({}, []) if absent."""
    values, layers, pending = {}, [], []
    lines = text.splitlines()
    try:
        start = lines.index("Build Configuration:")
    except ValueError:
        return values, layers
    seen_fpu = False
    for line in lines[start + 1:]:
        line = line.rstrip()
        if not line.strip():
            break
        m = _CONFIG_LINE.match(line)
        if m and not seen_fpu:
            values[m.group(1)] = m.group(2)
            seen_fpu = m.group(1) == "TARGET_FPU"
        elif m:
            for name in pending + [m.group(1)]:
                layers.append({"name": name, "revision": m.group(2)})
            pending = []
        elif seen_fpu and re.match(r"^\S+$", line.strip()):
            pending.append(line.strip())
        else:
            break
    return values, layers


def newest_build_configuration(builddir):
    """parse_build_configuration() of the newest cooker log of a build
    directory (any TMPDIR under it named tmp*), with the log's path; None if none."""
    logs = []
    try:
        tmpdirs = [os.path.join(builddir, d) for d in os.listdir(builddir) if d.startswith("tmp")]
    except FileNotFoundError:
        return None
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
