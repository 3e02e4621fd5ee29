# SPDX-License-Identifier: MIT
#
# Test helpers of meta-equivcache, written once and used by its oe-selftest
# cases, its pytest suite and its benchmarks: the layer's paths, the
# releases' trees, real servers on loopback or unix sockets (bitbake-hashserv,
# the cache's http mirror, PostgreSQL, equivcache-server serve), and readers
# of bitbake's output. Standard library only at import time: bitbake's
# modules are imported where a helper needs them.

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

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


def postgres_bindir():
    """Debian's PostgreSQL server binaries (package postgresql), or None."""
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return os.path.dirname(initdb)
    found = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(found)) if found else None


class PostgreSQL:
    """A real PostgreSQL server of its own in `directory`: listening on a
    unix socket there only, trust authentication, one database "hashserv"."""

    def __init__(self, directory):
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (Debian package postgresql)")
        self.directory = directory
        self.data = os.path.join(directory, "data")
        subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "hashserv"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        subprocess.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-l",
                        os.path.join(directory, "postgresql.log"),
                        "-o", "-k %s -c listen_addresses=''" % directory, "start"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([os.path.join(self.bindir, "createdb"), "-h", directory, "-U", "hashserv", "hashserv"],
                       check=True)
        self.url = "postgresql+asyncpg://hashserv@/hashserv?host=%s" % directory

    def query(self, sql):
        out = subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.directory, "-U", "hashserv", "-At",
                              "-c", sql, "hashserv"], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self):
        subprocess.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class CephRGW:
    """A real S3 server: a single-node Ceph cluster (one monitor, one OSD on
    memstore: objects in memory, nothing on a disk) and its RADOS Gateway,
    from Debian's packages, in `directory`, on loopback ports, as the user
    who runs the test; stop() ends it. `url` is the gateway's (path-style
    buckets: URL/BUCKET/KEY), `access_key` and `secret_key` those of its one
    S3 user; `started_in` the seconds the start took."""

    def __init__(self, directory, memory=1 << 30):
        begun = time.monotonic()
        self.directory = directory
        for sub in ("run", "log", "mon.a", "osd.0", "rgw"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        self.mon_port, self.port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.access_key, self.secret_key = "EQUIVCACHETEST" + uuid.uuid4().hex[:6].upper(), uuid.uuid4().hex
        fsid = str(uuid.uuid4())
        self.conf = os.path.join(directory, "ceph.conf")
        d = directory
        with open(self.conf, "w") as f:
            f.write(CEPH_CONF.format(d=d, fsid=fsid, mon_port=self.mon_port, port=self.port, memory=memory))
        self.processes = []
        try:
            # cephx, as a real cluster: with auth "none" an OSD may ask the monitor before it knows the
            # cluster's fsid, be refused, and never come up.
            keyring = os.path.join(d, "keyring")
            for entity, caps in (("mon.", ["mon", "allow *"]),
                                 ("client.admin", ["mon", "allow *", "osd", "allow *", "mgr", "allow *"]),
                                 ("osd.0", ["mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd"]),
                                 ("client.rgw", ["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"])):
                create = ["--create-keyring"] if entity == "mon." else []
                caps_args = [a for i in range(0, len(caps), 2) for a in ("--cap", caps[i], caps[i + 1])]
                self._run("ceph-authtool", *create, keyring, "--gen-key", "-n", entity, *caps_args, config=False)
            self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", "[v1:127.0.0.1:%d]" % self.mon_port,
                      os.path.join(d, "monmap"), config=False)
            self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", os.path.join(d, "monmap"), "--keyring", keyring)
            self._start("ceph-mon", "-i", "a")
            osd_uuid = str(uuid.uuid4())
            # A monitor that has just started answers EPERM for a moment: asked again.
            self._retry("ceph", "osd", "new", osd_uuid)
            self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
            self._start("ceph-osd", "-i", "0")
            wait_for(lambda: b'"num_up_osds":1' in self._retry("ceph", "osd", "stat", "-f", "json").replace(b" ", b""),
                     120, "the Ceph OSD did not come up")
            self._start("radosgw", "-n", "client.rgw")
            wait_for(self._answers, 180, "the RADOS Gateway did not answer on %s" % self.url)
            self._run("radosgw-admin", "user", "create", "--uid", "equivcache", "--display-name", "equivcache tests",
                      "--access-key", self.access_key, "--secret", self.secret_key)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - begun

    def _run(self, *command, config=True):
        command = list(command) + (["-c", self.conf] if config else [])
        result = subprocess.run(command, capture_output=True, timeout=120)
        if result.returncode:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(command), result.returncode,
                                                      (result.stderr or result.stdout).decode(errors="replace")))
        return result.stdout

    def _retry(self, *command, timeout=60):
        """_run(), again until it succeeds or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._run(*command)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _start(self, *command):
        log = open(os.path.join(self.directory, "log", command[0] + ".out"), "ab")
        self.processes.append(subprocess.Popen(list(command) + ["-c", self.conf, "-f"], stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()

    def _answers(self):
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError("%s exited with %d; see %s/log" % (process.args[0], process.returncode,
                                                                    self.directory))
        try:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                return answer.status == 200
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def client(self):
        """A boto3 S3 client of the gateway's user."""
        import boto3
        import botocore.config
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="default",
                            config=botocore.config.Config(s3={"addressing_style": "path"}))

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
public addr = 127.0.0.1
ms bind msgr2 = false
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
crash dir = {d}/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 0
mon data avail warn = 1
osd crush chooseleaf type = 0
[mon]
mon data = {d}/mon.$id
[osd]
osd data = {d}/osd.$id
osd objectstore = memstore
memstore device bytes = {memory}
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{port}
rgw data = {d}/rgw
"""


class Nginx:
    """A real nginx (Debian's nginx-light) serving `site` (a server block, as
    equivcache-server config --nginx prints it) with its files in `directory`,
    until stop(); `port` is where the site listens (waited for)."""

    def __init__(self, directory, site, port):
        conf = os.path.join(directory, "nginx.conf")
        with open(conf, "w") as f:
            f.write("daemon off;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n"
                    "access_log off;\nclient_body_temp_path %s;\nproxy_temp_path %s;\nfastcgi_temp_path %s;\n"
                    "uwsgi_temp_path %s;\nscgi_temp_path %s;\n%s}\n" % ((directory,) * 7 + (site,)))
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
        check = subprocess.run([nginx, "-t", "-p", directory, "-c", conf], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError("nginx -t: %s" % check.stderr)
        self.process = subprocess.Popen([nginx, "-p", directory, "-c", conf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 30, "nginx did not listen")

    def stop(self):
        self.process.terminate()
        self.process.wait()


class CacheServer:
    """equivcache-server serve CACHE_DIR as a child process, on free loopback ports."""

    def __init__(self, cache_dir, extra=(), env=None, state_dir=None):
        self.cache_dir = cache_dir
        self.http_port = free_port()
        self.hashserv_port = free_port()
        where = state_dir or cache_dir
        self.log = open(os.path.join(os.path.dirname(os.path.abspath(where)),
                                     os.path.basename(where) + "-serve.log"), "a")
        self.process = subprocess.Popen(
            [sys.executable, SERVER, "serve", "--http-port", str(self.http_port),
             "--hashserv-port", str(self.hashserv_port), *extra, cache_dir],
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


def chromium(url, workdir, screenshot=None):
    """The DOM of url as Debian's headless Chromium renders it (and, with
    screenshot, a PNG of the page there)."""
    binary = shutil.which("chromium")
    if binary is None:
        raise RuntimeError("no chromium (Debian package chromium; tests/setup installs it)")
    command = [binary, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--user-data-dir=" + os.path.join(workdir, "chromium-profile"), "--window-size=1280,2200"]
    if screenshot:
        subprocess.run(command + ["--screenshot=" + screenshot, url], check=True, capture_output=True, timeout=120)
    return subprocess.run(command + ["--dump-dom", url], check=True, capture_output=True, text=True,
                          timeout=120).stdout


def page_figures(dom):
    """{id: text} of the dashboard's headline figures (<b id="...">) in a DOM."""
    return dict(re.findall(r'<b id="([a-z-]+)">([^<]*)</b>', dom))


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
