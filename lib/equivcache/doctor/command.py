# SPDX-License-Identifier: MIT
#
# equivcache-doctor's command line: why the shared cache does not cover a
# target, in a few ranked causes, without building anything. It runs
# `bitbake -S none`, reads the cache's index and signature data, and hands
# both to doctor/analysis.py; scripts/equivcache-doctor calls main().

import argparse
import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

from equivcache import buildlock, catalog, names, probe
from equivcache.cli import Failure, Parser, UsageError, find_bitbake, run
from equivcache.doctor import analysis

PROG = "equivcache-doctor"

# The largest signature data file taken from the mirror (they are kilobytes).
SIGDATA_LIMIT = 256 << 20

# The largest index.json it reads.
INDEX_LIMIT = 1 << 30

DESCRIPTION = """\
Explain why the shared cache does not cover TARGET, without building it.

Run in a build directory (after oe-init-build-env). It computes this build's
task signatures with `bitbake -S none TARGET`, reads the cache's index.json,
and finds the setscene tasks the mirror has no object for. Among the tasks
they depend on it finds the root divergences: tasks whose own inputs
(variables, files, dependencies) differ from every signature the mirror
has, as opposed to tasks that only inherit a changed dependency. Each root
is compared with the mirror's signature data of the same recipe and task by
bitbake's own bb.siggen.compare_sigfiles (what bitbake-diffsigs prints), and
the causes are ranked by the number of tasks they cost: the root and every
task that depends on it.

The cache is EQUIVCACHE_SERVER, else the directory above each SSTATE_MIRRORS
entry, else --server. The signature data of the mirror comes from what
`equivcache-server publish` copied from the producers' STAMPS_DIR.

It changes nothing: the signature files `bitbake -S none` writes into
STAMPS_DIR are removed again unless they were there before (--keep-sigdata
keeps them for bitbake-diffsigs).
"""

EPILOG = """\
examples:
  %(prog)s core-image-minimal
  %(prog)s --json core-image-minimal > doctor.json
  %(prog)s --server http://cache.example.com:8080 core-image-minimal

Exit status: 0 diagnosed (whether or not the mirror covers the target),
1 bitbake or the cache's index failed, 2 bad usage.
"""


def make_parser():
    parser = Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG % {"prog": PROG},
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", metavar="TARGET", nargs="+", help="what you would give bitbake")
    parser.add_argument("--server", metavar="URL", help="the cache's root: http(s):// URL of an equivcache-server "
                        "mirror, or a cache directory (default: EQUIVCACHE_SERVER, else the directory above "
                        "each SSTATE_MIRRORS entry)")
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON (for CI)")
    parser.add_argument("--builddir", metavar="DIR", help="the build directory (default: $BUILDDIR, else the "
                        "current directory)")
    parser.add_argument("--bitbake", metavar="DIR", help="the bitbake directory (default: the one on PATH)")
    parser.add_argument("--keep-sigdata", action="store_true", help="keep the signature files bitbake -S none "
                        "wrote into STAMPS_DIR")
    return parser


def build_settings(builddir):
    """STAMPS_DIR and where the cache's index may be, from the configuration."""
    import bb.tinfoil
    from equivcache import cachedescriptor
    # Its messages go to stderr: stdout is the diagnosis (JSON with --json).
    with bb.tinfoil.Tinfoil(output=sys.stderr, tracking=False) as tinfoil:
        tinfoil.logger.setLevel(logging.ERROR)
        tinfoil.prepare(config_only=True, quiet=2)
        d = tinfoil.config_data
        stamps = d.getVar("STAMPS_DIR")
        locations = cachedescriptor.descriptor_locations(d, d.getVar("EQUIVCACHE_SERVER") or "", catalog.NAME)
    return stamps, locations


def index_locations(url):
    url = url.rstrip("/")
    if "://" not in url:
        url = "file://" + os.path.abspath(url)
    return [url + "/" + catalog.NAME]


def read_index(locations):
    doc, url, errors = catalog.read_first(locations, 30, INDEX_LIMIT)
    if doc is not None:
        return doc, url
    if not locations:
        raise Failure("no cache to compare with: set EQUIVCACHE_SERVER or SSTATE_MIRRORS, or pass --server URL")
    raise Failure("cannot read the cache's index: %s" % "; ".join(errors))


def run_bitbake(builddir, targets):
    """bitbake -S none TARGETS: the signature data of every task, into STAMPS_DIR."""
    command = ["bitbake", "-S", "none"] + targets
    result = subprocess.run(command, cwd=builddir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    tail = "\n".join(result.stdout.splitlines()[-30:])
    if result.returncode:
        raise Failure("%s failed (status %d):\n%s" % (" ".join(command), result.returncode, tail))
    return tail


def sigdata_written(stamps):
    """{path: (recipe, task, unihash, mtime)} of every sigdata file under stamps."""
    found = {}
    for rel, _, parsed in names.sigdata_files(stamps):
        path = os.path.join(stamps, rel)
        found[path] = parsed + (os.path.getmtime(path),)
    return found


def local_tasks(written, since, loader):
    """{pnid: analysis.Task} of the sigdata files (sigdata_written()) written
    since `since`, each with the tasks it depends on; the rest of its data is
    read only for the tasks the analysis compares (loader.complete)."""
    found, mtimes = {}, {}
    for path, (recipe, task, unihash, mtime) in written.items():
        if mtime < since:
            continue
        t = analysis.Task(recipe, task, unihash, path)
        if t.pnid not in found or mtime > mtimes[t.pnid]:
            found[t.pnid], mtimes[t.pnid] = t, mtime
    deps = loader.deps_many([t.path for t in found.values()])
    for t in found.values():
        t.runtaskdeps = deps.get(t.path) or []
    return found


# Signature data files decompressed by one zstd process: bitbake's own
# reader (bb.compress.zstd) starts a zstd process per file, 5 to 10 ms each,
# which for the thousands of tasks of an image was most of the doctor's time.
ZSTD_BATCH = 400
# bitbake writes signature data with sorted keys and no spaces: each
# document starts with its "basehash" key (a key inside a string would have
# its quotes escaped), and "runtaskdeps" is a top-level key.
_DOCUMENT_START = '{"basehash":'
_DEPS_KEY = '"runtaskdeps":'


class SigdataLoader:
    """Signature data files read in batches, two zstd processes at a time.
    load_many(paths) -> {path: sigdata dict}; deps_many(paths) -> {path:
    runtaskdeps}, without decoding the rest of each document (the variables
    are most of it); complete(tasks) gives tasks their whole data. A batch
    that fails is read file by file (load_one)."""

    def __init__(self, decoder_hook, load_one):
        self.decoder = json.JSONDecoder(object_hook=decoder_hook)
        self.plain = json.JSONDecoder()
        self.load_one = load_one

    def _texts(self, paths):
        """The decompressed documents of paths, in order, or None."""
        try:
            result = subprocess.run(["zstd", "-d", "-c", "-q", "--"] + paths, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        except OSError:
            return None
        if result.returncode:
            return None
        text = result.stdout.decode("utf-8", "replace")
        starts, pos = [], text.find(_DOCUMENT_START)
        while pos >= 0:
            starts.append(pos)
            pos = text.find(_DOCUMENT_START, pos + 1)
        if len(starts) != len(paths) or text[:starts[0] if starts else 0].strip():
            return None
        return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]

    def _batches(self, paths, parse, fallback):
        paths = list(paths)
        chunks = [paths[i:i + ZSTD_BATCH] for i in range(0, len(paths), ZSTD_BATCH)]
        found = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for chunk, texts in zip(chunks, pool.map(self._texts, chunks)):
                try:
                    found.update(zip(chunk, map(parse, texts)) if texts is not None else ())
                    if texts is not None:
                        continue
                except ValueError:
                    pass
                found.update((p, fallback(p)) for p in chunk)
        return found

    def load_many(self, paths):
        return self._batches(paths, lambda text: self.decoder.decode(text.strip()), self.load_one)

    def deps_many(self, paths):
        def deps(text):
            at = text.find(_DEPS_KEY)
            if at < 0:
                return []
            at += len(_DEPS_KEY)
            while text[at].isspace():
                at += 1
            return self.plain.raw_decode(text, at)[0]

        def fallback(path):
            return (self.load_one(path) or {}).get("runtaskdeps") or []
        return self._batches(paths, deps, fallback)

    def complete(self, tasks):
        wanted = [t for t in tasks if t.data is None]
        loaded = self.load_many([t.path for t in wanted])
        for t in wanted:
            t.data = loaded.get(t.path) or {}


def fetcher(root, workdir):
    """fetch(paths) -> {path: local file} for the cache at root (URL or file://)."""
    parsed = urllib.parse.urlsplit(root)
    if parsed.scheme == "file":
        base = urllib.parse.unquote(parsed.path)

        def fetch_local(paths):
            return {p: os.path.join(base, p) for p in paths if os.path.isfile(os.path.join(base, p))}
        return fetch_local

    def one(path):
        try:
            data = probe.fetch(root + "/" + urllib.parse.quote(path), 30, limit=SIGDATA_LIMIT)
        except OSError:
            return None
        dest = os.path.join(workdir, path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
        return dest

    def fetch_http(paths):
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            return {p: f for p, f in zip(paths, pool.map(one, paths)) if f}
    return fetch_http


def main(argv=None):
    args = make_parser().parse_args(argv)
    return run(PROG, diagnose, args)


class Phases:
    """The doctor's phases' times: phase(name) ends the phase called name."""

    def __init__(self):
        self.timings, self.start = {}, time.monotonic()

    def __call__(self, name):
        now = time.monotonic()
        self.timings[name] = round(now - self.start, 3)
        self.start = now


def signature_readers():
    """(SigdataLoader, load(path), compare(mirror file, local file)) over bitbake's own signature code."""
    import bb.compress.zstd
    import bb.siggen

    def load(path):
        try:
            with bb.compress.zstd.open(path, "rt", encoding="utf-8", num_threads=1) as f:
                return json.load(f, object_hook=bb.siggen.SetDecoder)
        except (OSError, ValueError, EOFError):
            return None

    def compare(mirror_file, local_file):
        return bb.siggen.compare_sigfiles(mirror_file, local_file)
    return SigdataLoader(bb.siggen.SetDecoder, load), load, compare


def diagnose(args):
    builddir = os.path.abspath(args.builddir or os.environ.get("BUILDDIR") or os.getcwd())
    if not os.path.isfile(os.path.join(builddir, "conf", "bblayers.conf")):
        raise UsageError("%s is not a build directory (no conf/bblayers.conf); run it in one, or pass "
                         "--builddir" % builddir)
    bitbake = find_bitbake(args.bitbake)
    sys.path.insert(0, os.path.join(bitbake, "lib"))
    os.environ["PATH"] = os.path.join(bitbake, "bin") + os.pathsep + os.environ.get("PATH", "")
    os.chdir(builddir)

    loader, load, compare = signature_readers()
    fetched = {}

    def load_cached(path):
        return fetched[path] if path in fetched else load(path)

    phase = Phases()
    stamps, locations = build_settings(builddir)
    phase("configuration")
    try:
        buildlock.wait_for_server_exit(builddir)
    except TimeoutError as e:
        raise Failure(str(e))
    if args.server:
        locations = index_locations(args.server)
    mirror_index, index_url = read_index(locations)
    before = set(sigdata_written(stamps))
    phase("index")
    started = time.time() - 1
    output = run_bitbake(builddir, args.targets)
    phase("bitbake")
    written = sigdata_written(stamps)
    with tempfile.TemporaryDirectory(prefix="equivcache-doctor-") as workdir:
        try:
            tasks = local_tasks(written, started, loader)
            phase("signatures")
            if not tasks:
                raise Failure("bitbake -S none wrote no signature data under STAMPS_DIR %s (bitbake keeps the stamp "
                              "paths of a parse cached under a configuration that differs only in STAMPS_DIR or "
                              "TMPDIR: remove that parse cache, TMPDIR/cache, and run again); it said:\n%s"
                              % (stamps, output))
            root = index_url[: -len("/" + catalog.NAME)]
            fetch = fetcher(root, workdir)

            def fetch_and_load(paths):
                files = fetch(paths)
                fetched.update(loader.load_many(list(files.values())))
                return files
            doc = analysis.analyse(tasks, analysis.Mirror(mirror_index), fetch_and_load, load_cached, compare,
                                   complete=loader.complete)
            phase("analysis")
        finally:
            if not args.keep_sigdata:
                for path in set(written) - before:
                    os.unlink(path)
    phase("clean-up")
    doc["timings"] = phase.timings

    doc["targets"] = args.targets
    doc["index"] = index_url
    if args.json:
        json.dump(doc, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(analysis.render(doc))
    return 0
