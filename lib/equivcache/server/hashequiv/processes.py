# SPDX-License-Identifier: MIT
#
# The cache server's hash equivalence endpoints: the real bitbake-hashserv
# from poky, run as a child process (the read endpoint on TCP, the write
# endpoint on a unix socket, a private one for publish), and the socket
# helpers around them. bitbake's hashserv client is imported from the
# bitbake directory the script found.

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

from equivcache.background import Background
from equivcache.cli import Failure, UsageError

logger = logging.getLogger("equivcache.server")


DEFAULT_HTTP_PORT = 8080
DEFAULT_HASHSERV_PORT = 8686
# bitbake-hashserv's websocket listener, for a TLS-terminating proxy: loopback only.
DEFAULT_WS_PORT = 8687
WS_BIND = "127.0.0.1"
READ_PERMS = "@read"
WRITE_PERMS = "@read,@report,@db-admin"
START_TIMEOUT = 30
READY_METHOD = "equivcache.ready"


def import_hashserv(bitbake):
    """bitbake's hashserv module, from bitbake's lib/. Importing bb builds
    its shell parser's tables, and where bitbake's directory is not writable
    writes them as pyshtables.py into the current directory; with a module
    of that name importable, bitbake builds them in memory and writes
    nothing. A stand-in is registered for that, not a chdir."""
    lib = os.path.join(bitbake, "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    if "hashserv" not in sys.modules and importlib.util.find_spec("pyshtables") is None:
        sys.modules["pyshtables"] = types.ModuleType("pyshtables")
    import hashserv
    return hashserv


def _unix_target(path):
    """A name connect() takes for the unix socket path: through the
    directory's descriptor where the path is over AF_UNIX's length limit."""
    if len(os.fsencode(path)) < 100:
        return path, None
    fd = os.open(os.path.dirname(path), os.O_RDONLY | getattr(os, "O_PATH", 0))
    return "/proc/self/fd/%d/%s" % (fd, os.path.basename(path)), fd


def socket_alive(path):
    """True if a server accepts connections on the unix socket path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        target, fd = _unix_target(path)
        try:
            s.connect(target)
            return True
        except OSError:
            return False
        finally:
            if fd is not None:
                os.close(fd)


def listening(address):
    """True if something accepts connections at a hashserv address (unix://PATH or HOST:PORT)."""
    if address.startswith("unix://"):
        return socket_alive(address[len("unix://"):])
    if address.startswith(("ws://", "wss://")):
        address = address.split("://", 1)[1].split("/", 1)[0]
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


class _QuietRetries(logging.Filter):
    """bitbake's client warns at each retry ("Error talking to server"): not
    worth a line while a server we started is coming up."""

    def filter(self, record):
        return not record.getMessage().startswith("Error talking to server")


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


def _stop_with_parent(nice=0):
    """In the child: SIGTERM when our process dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG), so that no private endpoint outlives a killed gc or
    publish; at nice `nice` if given."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if nice:
        os.nice(nice)


class HashServ:
    """One real bitbake-hashserv process, its output relayed to our log."""

    def __init__(self, name, bitbake, bind, database, anon_perms, log_level, cwd, admin=None, db_password=None,
                 nice=0):
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
                                        preexec_fn=lambda: _stop_with_parent(nice))
        self.relay = threading.Thread(target=self._relay, daemon=True)
        self.relay.start()

    def _relay(self):
        for line in self.process.stdout:
            line = line.rstrip()
            self.output.append(line)
            del self.output[:-50]
            logger.info("%s: %s", self.name, line)

    def wait_ready(self, hashserv, address):
        """Until the server answers a query, quietly: first until it listens,
        then until a query succeeds (it listens before its tables exist, and
        on PostgreSQL two servers creating them at once collide)."""
        def ready():
            if not listening(address):
                return False
            try:
                with contextlib.closing(hashserv.create_client(address)) as client:
                    client.get_unihash(READY_METHOD, "0" * 64)
                return True
            except Exception:   # refused, tables not yet there
                return False
        quiet = _QuietRetries()
        client_logger = logging.getLogger("hashserv.client")
        client_logger.addFilter(quiet)
        try:
            self.wait_listening(ready)
        finally:
            client_logger.removeFilter(quiet)

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
def write_endpoint(layout, bitbake, database, db_password=None, admin=None):
    """A write endpoint on the cache's database, made ready while the block
    runs: a Background whose result() is (hashserv module, address). The
    running server's socket, else a private bitbake-hashserv for the time of
    the block (which creates the admin user if given: a running server has):
    started here (its parent-death signal is bound to this thread), then
    bitbake's hashserv imported (a quarter of a second) and the server
    waited for in the background, while a publish copies its files."""
    if socket_alive(layout.socket):
        yield Background(lambda: (import_hashserv(bitbake), "unix://" + layout.socket))
        return
    private = os.path.join(layout.private, "publish-%d.sock" % os.getpid())
    child = HashServ("hashserv-publish", bitbake, "unix://" + private, database, WRITE_PERMS, "WARNING",
                     layout.private, admin=admin, db_password=db_password)

    def ready():
        hashserv = import_hashserv(bitbake)
        child.wait_ready(hashserv, "unix://" + private)
        return hashserv, "unix://" + private
    waiting = Background(ready)
    try:
        yield waiting
    finally:
        child.stop()
        waiting.join()   # its wait ends with the child
        with contextlib.suppress(FileNotFoundError):
            os.unlink(private)
