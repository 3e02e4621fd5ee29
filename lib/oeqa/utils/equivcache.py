# SPDX-License-Identifier: MIT
#
# Test helpers of meta-equivcache, written once and used by its oe-selftest
# cases, its pytest suite and its benchmarks: the layer's paths, the
# releases' trees, the layer's own servers on loopback or unix sockets
# (bitbake-hashserv, the cache's http mirror, equivcache-server serve), and
# readers of bitbake's output. The third-party services the tests start
# (PostgreSQL, Ceph RGW, nginx, Chromium) are in equivcache_services.py. Standard library only at import time: bitbake's
# modules are imported where a helper needs them.

import argparse
import contextlib
import glob
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

LAYERDIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SERVER = os.path.join(LAYERDIR, "scripts", "equivcache-server")
CLIENT = os.path.join(LAYERDIR, "scripts", "equivcache-client")
DOCTOR = os.path.join(LAYERDIR, "scripts", "equivcache-doctor")

# The scarthgap tree that tests/setup fills and tests/run uses (POKY_DIR).
DEFAULT_POKY_DIR = "/opt/yocto/poky-yocto-5.0.15"


def poky_dir():
    """The release tree the tests run against: $POKY_DIR, else the default."""
    return os.environ.get("POKY_DIR") or DEFAULT_POKY_DIR


def add_bitbake_to_path(poky):
    """Make bitbake's and OE-core's Python libraries of the tree `poky`
    importable (after the layer's own lib/); a missing tree is a RuntimeError."""
    bitbake_lib = os.path.join(poky, "bitbake", "lib")
    if not os.path.isfile(os.path.join(bitbake_lib, "bb", "__init__.py")):
        raise RuntimeError("no poky at %s: run tests/setup, or set POKY_DIR" % poky)
    for path in (os.path.join(poky, "meta", "lib"), bitbake_lib):
        if path not in sys.path:
            sys.path.insert(1, path)


def benchmark_parser(name, description, example="", workdir=None):
    """The argument parser of benchmark tests/benchmarks/NAME, with --poky; with `workdir` (its
    default) also --workdir and --target, for a benchmark that runs bitbake on a target."""
    parser = argparse.ArgumentParser(
        prog=name, description=description,
        epilog="example: POKY_DIR=%s tests/benchmarks/%s %s" % (DEFAULT_POKY_DIR, name, example))
    parser.add_argument("--poky", default=poky_dir(), help="poky tree (default: $POKY_DIR or %s)" % DEFAULT_POKY_DIR)
    if workdir:
        parser.add_argument("--workdir", default=workdir,
                            help="build directory and cache live here (default: %(default)s; reused: the parse "
                                 "cache survives)")
        parser.add_argument("--target", default="core-image-minimal", help="default: %(default)s")
    return parser


def parse_benchmark_args(parser, argv=None):
    """parser's arguments; a --poky that is no poky tree is a usage error."""
    args = parser.parse_args(argv)
    if not (os.path.isfile(os.path.join(args.poky, "oe-init-build-env"))
            and os.path.isfile(os.path.join(args.poky, "bitbake", "lib", "bb", "__init__.py"))):
        parser.error("no poky at %s (set POKY_DIR or --poky)" % args.poky)
    return args


def bitbake_env(poky, builddir):
    """The environment oe-init-build-env gives for `builddir`, as a dict."""
    out = subprocess.run(["bash", "-c", '. "%s/oe-init-build-env" "%s" >/dev/null && env -0' % (poky, builddir)],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def free_port(host="127.0.0.1"):
    """A loopback TCP port where nothing listens (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def silent_listener(address=("127.0.0.1", 0), family=socket.AF_INET):
    """A listening socket that nobody serves: the kernel completes the
    connections and nothing ever answers (a silent host). Close it when done."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind(address)
        s.listen(128)
    except OSError:
        s.close()
        raise
    return s


def wait_for(check, timeout, what):
    """Poll check() until it is true; RuntimeError "<what> within N s" past the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("%s within %d s" % (what, timeout))
        time.sleep(0.05)


def database_rows(path, tables=("outhashes_v2", "unihashes_v3")):
    """{table: rows} of a hashserv SQLite database, read-only (its server may run)."""
    with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True)) as db:
        return {t: db.execute("SELECT COUNT(*) FROM %s" % t).fetchone()[0] for t in tables}


class HashServer:
    """A real hash equivalence server (bitbake's hashserv.create_server, in a
    child process) on a unix socket in `directory`, or on `address`
    ("127.0.0.1:PORT"); read-only or with other anonymous permissions if
    asked. It answers as soon as the constructor returns."""

    def __init__(self, directory, address=None, database=None, read_only=False, anon_perms=None):
        import hashserv

        self.socket = os.path.join(directory, "hashserve.sock")
        self.address = address or "unix://" + self.socket
        kwargs = {"read_only": read_only}
        if anon_perms is not None:
            kwargs["anon_perms"] = anon_perms.split(",")
        server = hashserv.create_server(self.address, database or os.path.join(directory, "hashserv.db"), **kwargs)
        self.process = server.serve_as_process()
        self.pid = self.process.pid

    def stop(self, sig=signal.SIGTERM):
        if self.process.exitcode is None:
            os.kill(self.pid, sig)
            self.process.join(30)

    def kill(self):
        self.stop(signal.SIGKILL)


class HttpMirror:
    """The cache's own read-only http mirror (equivcache.server.http.mirror) serving
    `directory` on a free loopback port, in a thread. `requests` lists the
    (method, path) of every request it received; `delay` seconds (which can
    be changed while it runs) are added before each answer: a distant mirror."""

    def __init__(self, directory, delay=0):
        from equivcache.server.http import mirror as mirrorhttp

        self.requests = []
        self.delay = delay
        mirror = self

        class Handler(mirrorhttp.MirrorHandler):
            def send_file(self, body):
                mirror.requests.append((self.command, self.path))
                if mirror.delay:
                    time.sleep(mirror.delay)
                super().send_file(body)

        self.server = mirrorhttp.MirrorServer(directory, handler=Handler)
        self.url = self.server.url
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests_under(self, prefix):
        return [r for r in self.requests if r[1].startswith(prefix)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class CacheServer:
    """equivcache-server serve CACHE_DIR as a child process, on free loopback ports
    (the websocket listener too if websocket, else none: one process less to start)."""

    def __init__(self, cache_dir, extra=(), env=None, state_dir=None, websocket=False):
        self.cache_dir = cache_dir
        self.http_port = free_port()
        self.hashserv_port = free_port()
        self.ws_port = free_port() if websocket else 0
        where = state_dir or cache_dir
        self.log = open(os.path.join(os.path.dirname(os.path.abspath(where)),
                                     os.path.basename(where) + "-serve.log"), "a")
        self.process = subprocess.Popen(
            [sys.executable, SERVER, "serve", "--http-port", str(self.http_port),
             "--hashserv-port", str(self.hashserv_port), "--ws-port", str(self.ws_port), *extra, cache_dir],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.hashserv = "127.0.0.1:%d" % self.hashserv_port
        self.socket = "unix://" + os.path.join(os.path.abspath(cache_dir), "server", "hashserv.sock")
        state = os.path.join(state_dir or cache_dir, "server", "state.json")

        def started():
            if self.process.poll() is not None:
                raise RuntimeError("equivcache-server serve exited with %d; see %s"
                                   % (self.process.returncode, self.log.name))
            return os.path.exists(state)
        wait_for(started, 60, "equivcache-server serve did not start")

    def admin(self):
        with open(os.path.join(self.cache_dir, "server", "admin.json")) as f:
            return json.load(f)

    def stop(self):
        """SIGTERM, as systemd stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


# A producer's task times, as buildstats.bbclass and bitbake write them.

def buildstats_task(base, build, pf, task, started, ended, status="PASSED"):
    """A buildstats task file, line for line as buildstats.bbclass writes it."""
    directory = os.path.join(base, build, pf)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, task), "a") as f:
        f.write("Event: TaskStarted \nStarted: %0.2f \n" % started)
        f.write("%s: %s\nElapsed time: %0.2f seconds\nutime: 3\nrusage ru_utime: 0.1\n" % (pf, task, ended - started))
        f.write("Status: %s \nEnded: %0.2f \n" % (status, ended))


def sigdata(stamps, arch, pn, pv, task, unihash, mtime):
    directory = os.path.join(stamps, arch, pn)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%s.%s.sigdata.%s" % (pv, task, unihash))
    with open(path, "w") as f:
        f.write("{}")
    os.utime(path, (mtime, mtime))



def buildstats_durations(base):
    """{(PF, task): seconds} of the newest run of each task (setscene tasks
    left out) in a producer's buildstats, read on their own (not through
    lib/equivcache/durations.py, whose result the tests compare with this)."""
    found = {}
    for build in sorted(os.listdir(base)):
        for path in glob.glob(os.path.join(base, build, "*", "do_*")):
            if path.endswith("_setscene"):
                continue
            with open(path) as f:
                text = f.read()
            started = re.search(r"^Started: ([0-9.]+)", text, re.MULTILINE)
            ended = re.search(r"^Ended: ([0-9.]+)", text, re.MULTILINE)
            if started and ended and "Status: PASSED" in text:
                pf, task = path.split(os.sep)[-2:]
                found[(pf, task)] = round(float(ended.group(1)) - float(started.group(1)), 2)
    return found


# Readers of bitbake's console output.

TASK_RE = re.compile(r"^NOTE: recipe (\S+)-[^-\s]+-r\d+: task (do_\S+): Started$", re.MULTILINE)


def executed_tasks(output):
    """The "recipe:task" pairs that bitbake's output says were started."""
    return {"%s:%s" % m for m in TASK_RE.findall(output)}


def warnings(output):
    """The warnings in bitbake's output. Without a terminal, a warning can
    follow progress text on the same line ("Initialising tasks...WARNING: ...")."""
    return re.findall(r"WARNING: (.*)$", output, re.MULTILINE)


def sstate_summary(output):
    """{"wanted", "local", "mirror", "missed"} from bitbake's "Sstate summary" line, or None."""
    m = re.search(r"Sstate summary: Wanted (\d+) Local (\d+) Mirrors (\d+) Missed (\d+)", output)
    return dict(zip(("wanted", "local", "mirror", "missed"), map(int, m.groups()))) if m else None


def tasks_summary(output):
    """(attempted, not rerun) from bitbake's "Tasks Summary" line, or None."""
    m = re.search(r"Tasks Summary: Attempted (\d+) tasks of which (\d+) didn't need to be rerun", output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def listening_addresses(pid):
    """The (address, port) pairs on which the process pid and its descendants accept TCP
    connections, from /proc (IPv4 as dotted quads, IPv6 as 32 hex digits)."""
    pids, todo = set(), [pid]
    while todo:
        current = todo.pop()
        pids.add(current)
        for children in glob.glob("/proc/%d/task/*/children" % current):
            with contextlib.suppress(OSError), open(children) as f:
                todo += [int(c) for c in f.read().split()]
    inodes = set()
    for p in pids:
        for fd in glob.glob("/proc/%d/fd/*" % p):
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:   # LISTEN
                    address, port = fields[1].split(":")
                    if len(address) == 8:
                        address = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                    found.add((address, int(port, 16)))
    return found
