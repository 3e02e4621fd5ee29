# SPDX-License-Identifier: MIT
#
# Real servers for the tests and benchmarks of the server scripts: a free
# loopback port, a PostgreSQL server in a directory (unix socket only, no
# TCP), and equivcache-server serve as a child process. Imported by pytest
# (tests/ is on sys.path) and by the oe-selftest cases.

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

LAYERDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(LAYERDIR, "scripts", "equivcache-server")
CLIENT = os.path.join(LAYERDIR, "scripts", "equivcache-client")
DOCTOR = os.path.join(LAYERDIR, "scripts", "equivcache-doctor")


def free_port(host="127.0.0.1"):
    """A loopback TCP port where nothing listens (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("%s within %d s" % (what, timeout))
        time.sleep(0.05)


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


class CacheServer:
    """equivcache-server serve CACHE_DIR as a child process, on free loopback ports."""

    def __init__(self, cache_dir, extra=(), env=None):
        self.cache_dir = cache_dir
        self.http_port = free_port()
        self.hashserv_port = free_port()
        self.log = open(os.path.join(os.path.dirname(os.path.abspath(cache_dir)),
                                     os.path.basename(cache_dir) + "-serve.log"), "a")
        self.process = subprocess.Popen(
            [sys.executable, SERVER, "serve", "--http-port", str(self.http_port),
             "--hashserv-port", str(self.hashserv_port), *extra, cache_dir],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = "http://127.0.0.1:%d" % self.http_port
        self.hashserv = "127.0.0.1:%d" % self.hashserv_port
        self.socket = "unix://" + os.path.join(os.path.abspath(cache_dir), "server", "hashserv.sock")
        state = os.path.join(cache_dir, "server", "state.json")

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
