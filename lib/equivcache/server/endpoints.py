# SPDX-License-Identifier: MIT
#
# The cache server's hash equivalence endpoints: the real bitbake-hashserv
# from poky, run as a child process (the read endpoint on TCP, the write
# endpoint on a unix socket, a private one for publish), and the socket
# helpers around them. bitbake's hashserv client is imported from the
# bitbake directory the script found.

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from equivcache.cli import Failure, UsageError

logger = logging.getLogger("equivcache.server")


DEFAULT_HTTP_PORT = 8080
DEFAULT_HASHSERV_PORT = 8686
READ_PERMS = "@read"
WRITE_PERMS = "@read,@report,@db-admin"
START_TIMEOUT = 30
READY_METHOD = "equivcache.ready"


def import_hashserv(bitbake, workdir):
    """bitbake's hashserv module. Importing bb may write its shell parser
    tables (pyshtables.py) into the current directory, as bitbake does in a
    build directory: do it in workdir (the cache's private directory)."""
    lib = os.path.join(bitbake, "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        import hashserv
    finally:
        os.chdir(cwd)
    return hashserv


def socket_alive(path):
    """True if a server accepts connections on the unix socket path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        cwd = os.getcwd()
        try:
            os.chdir(os.path.dirname(path))   # AF_UNIX path length limit
            s.connect(os.path.basename(path))
            return True
        except OSError:
            return False
        finally:
            os.chdir(cwd)


def loopback_for(host):
    """Where this machine reaches a server bound to host (a wildcard: loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def check_port_free(host, port, what):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError("%s port %s:%d is in use (%s); stop what holds it or choose another port"
                             % (what, host, port, e.strerror or e))


def tcp_address(host, port):
    return ("[%s]:%d" % (host, port)) if ":" in host else ("%s:%d" % (host, port))


def _stop_with_parent():
    """In the child: SIGTERM when our process dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG), so that no private endpoint outlives a killed gc or publish."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class HashServ:
    """One real bitbake-hashserv process, its output relayed to our log."""

    def __init__(self, name, bitbake, bind, database, anon_perms, log_level, cwd, admin=None, db_password=None):
        self.name = name
        self.bind = bind
        command = [sys.executable, os.path.join(bitbake, "bin", "bitbake-hashserv"),
                   "--bind", bind, "--database", database, "--anon-perms", anon_perms, "--log", log_level]
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("HASHSERVER_")]:
            del env[key]
        if admin:
            # The password goes through the environment, not the command line (ps).
            command += ["--admin-user", admin["username"]]
            env["HASHSERVER_ADMIN_PASSWORD"] = admin["password"]
        if db_password:
            env["HASHSERVER_DB_PASSWORD"] = db_password
        self.output = []
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace",
                                        start_new_session=True, cwd=cwd,   # bb writes pyshtables.py there
                                        preexec_fn=_stop_with_parent)
        self.relay = threading.Thread(target=self._relay, daemon=True)
        self.relay.start()

    def _relay(self):
        for line in self.process.stdout:
            line = line.rstrip()
            self.output.append(line)
            del self.output[:-50]
            logger.info("%s: %s", self.name, line)

    def wait_ready(self, hashserv, address):
        """Until the server answers a query: it listens before its tables
        exist, and on PostgreSQL two servers creating them at once collide."""
        def ready():
            try:
                with contextlib.closing(hashserv.create_client(address)) as client:
                    client.get_unihash(READY_METHOD, "0" * 64)
                return True
            except Exception:   # refused, not yet listening, tables not yet there
                return False
        self.wait_listening(ready)

    def wait_listening(self, alive):
        deadline = time.monotonic() + START_TIMEOUT
        while not alive():
            if self.process.poll() is not None:
                self.relay.join(2)
                raise Failure("bitbake-hashserv (%s on %s) exited with status %d: %s" % (
                    self.name, self.bind, self.process.returncode,
                    " | ".join(self.output[-5:]) or "no output"))
            if time.monotonic() > deadline:
                self.stop()
                raise Failure("bitbake-hashserv (%s) did not listen on %s within %d s"
                              % (self.name, self.bind, START_TIMEOUT))
            time.sleep(0.05)

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.relay.join(2)
        return self.process.returncode


@contextlib.contextmanager
def write_endpoint(layout, bitbake, hashserv, database, db_password=None, admin=None):
    """The address of a write endpoint on the cache's database: the running
    server's socket, else a private bitbake-hashserv for the time of the merge
    (which creates the admin user if given: a running server has)."""
    if socket_alive(layout.socket):
        yield "unix://" + layout.socket
        return
    private = os.path.join(layout.private, "publish-%d.sock" % os.getpid())
    child = HashServ("hashserv-publish", bitbake, "unix://" + private, database, WRITE_PERMS, "WARNING",
                     layout.private, admin=admin, db_password=db_password)
    try:
        child.wait_ready(hashserv, "unix://" + private)
        yield "unix://" + private
    finally:
        child.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(private)
