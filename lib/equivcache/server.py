# SPDX-License-Identifier: MIT
#
# equivcache-server: publish a producer's build into a cache directory and
# serve it: the real bitbake-hashserv from poky (a read-only TCP endpoint for
# consumers, a unix-socket write endpoint for producers) beside the http
# mirror of lib/equivcache/mirrorhttp.py. The hashserv client comes from
# bitbake's lib (the script puts it on sys.path); nothing here rewrites it.

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

from equivcache import cache, descriptor as desc, probe
from equivcache.mirrorhttp import MirrorServer

logger = logging.getLogger("equivcache.server")

DEFAULT_HTTP_PORT = 8080
DEFAULT_HASHSERV_PORT = 8686
READ_PERMS = "@read"
WRITE_PERMS = "@read,@report,@db-admin"
ADMIN_USER = "admin"
START_TIMEOUT = 30
READY_METHOD = "equivcache.ready"


class UsageError(Exception):
    """Bad input: one line, exit status 2, nothing changed."""


class Failure(Exception):
    """Something that should have worked did not: exit status 1."""


# ---------------------------------------------------------------- helpers

def find_bitbake(explicit=None, layerdir=None):
    """The bitbake directory (with bin/bitbake-hashserv and lib/hashserv):
    --bitbake, $BITBAKEDIR, the bitbake on PATH (oe-init-build-env puts it
    there), $POKY_DIR/bitbake, or poky beside the layer."""
    candidates = []
    if explicit:
        candidates.append(explicit)
    if os.environ.get("BITBAKEDIR"):
        candidates.append(os.environ["BITBAKEDIR"])
    on_path = shutil.which("bitbake")
    if on_path:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(on_path))))
    if os.environ.get("POKY_DIR"):
        candidates.append(os.path.join(os.environ["POKY_DIR"], "bitbake"))
    if layerdir:
        parent = os.path.dirname(os.path.abspath(layerdir))
        candidates += [os.path.join(parent, "poky", "bitbake"), os.path.join(parent, "bitbake")]
    for c in candidates:
        if os.path.isfile(os.path.join(c, "bin", "bitbake-hashserv")) and \
                os.path.isdir(os.path.join(c, "lib", "hashserv")):
            return os.path.abspath(c)
    if explicit:
        raise UsageError("--bitbake %s: no bin/bitbake-hashserv and lib/hashserv there" % explicit)
    raise UsageError("cannot find bitbake: source oe-init-build-env, or set BITBAKEDIR or POKY_DIR, "
                     "or pass --bitbake DIR")


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


def is_sqlite(database):
    return "://" not in database


def show_database(database):
    """The database for messages, without a password."""
    if is_sqlite(database):
        return "sqlite: " + database
    scheme, _, rest = database.partition("://")
    if "@" in rest.split("/", 1)[0]:
        userinfo, _, host = rest.partition("@")
        rest = userinfo.split(":", 1)[0] + ":***@" + host if ":" in userinfo else rest
    return scheme + "://" + rest


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


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError as e:
        raise Failure("%s is not valid JSON (%s); fix or remove it" % (path, e))


def check_cache_dir(path, create):
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError("cache directory %s is not a directory" % path)
    if not os.path.isdir(path):
        if not create:
            raise UsageError("cache directory %s does not exist (publish a build into it first, "
                             "or create it)" % path)
        parent = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(parent):
            raise UsageError("cannot create cache directory %s: %s does not exist" % (path, parent))
    layout = cache.Layout(path)
    layout.create()
    return layout


def saved_config(layout):
    """server.json: {"database": ..., "hashserv": [public addresses]}, {} at first."""
    return load_json(layout.config, {}) or {}


def saved_database(layout):
    """The cache's database: the one server.json names, else SQLite in the cache."""
    return saved_config(layout).get("database") or layout.database


def server_config(layout, database=None):
    """The cache's server.json (database choice), updated with --database.
    A cache keeps the database it was created with: changing it would
    split the equivalences from the objects."""
    config = saved_config(layout)
    current = config.get("database") or layout.database
    if database and database != current and (config.get("database") or os.path.exists(layout.database)):
        raise UsageError("cache %s uses the database %s, not %s; a cache keeps one database"
                         % (layout.root, show_database(current), show_database(database)))
    config["database"] = database or current
    cache.write_json(layout.config, config, 0o600)
    return config


def admin_credentials(layout):
    """The admin user of the read endpoint, generated on first start, mode 0600."""
    creds = load_json(layout.admin)
    if creds is None:
        creds = {"username": ADMIN_USER, "password": secrets.token_urlsafe(32)}
        cache.write_json(layout.admin, creds, 0o600)
        # The same password for the systemd units of `config --systemd`.
        cache.write_atomic(os.path.join(layout.private, "admin.env"),
                           "HASHSERVER_ADMIN_PASSWORD=%s\n" % creds["password"], 0o600)
        logger.info("generated the admin credentials of the read endpoint in %s (mode 0600)", layout.admin)
    return creds


def running_state(layout):
    """state.json if its server process is alive, else None."""
    state = load_json(layout.state)
    if not state:
        return None
    try:
        os.kill(state["pid"], 0)
    except (OSError, KeyError, TypeError):
        return None
    return state


# ---------------------------------------------------------------- hashserv

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
                                        start_new_session=True, cwd=cwd)   # bb writes pyshtables.py there
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


# ---------------------------------------------------------------- descriptor

def write_descriptor(layout, producer=None):
    """Refresh the descriptor: the read endpoint's public address as serve
    saved it in server.json; what is not given kept from the current one."""
    current = load_json(layout.descriptor, {}) or {}
    addresses = saved_config(layout).get("hashserv") or current.get("hashserv") or \
        [tcp_address(socket.getfqdn(), DEFAULT_HASHSERV_PORT)]
    doc = {
        "format": desc.FORMAT,
        "version": desc.VERSION,
        "generated": cache.utc_iso(),
        "hashserv": addresses,
        "sstate": "sstate-cache",
        "downloads": "downloads",
        "nativelsbstrings": cache.nativelsbstrings(layout.sstate),
        "producer": producer if producer is not None else current.get("producer", {}),
    }
    cache.write_atomic(layout.descriptor, desc.dumps(doc))
    return doc


# ---------------------------------------------------------------- serve

def serve(layout, bitbake, bind="127.0.0.1", http_port=DEFAULT_HTTP_PORT, hashserv_port=DEFAULT_HASHSERV_PORT,
          public_host=None, database=None, db_password=None, verbose=False):
    """Serve the cache until SIGTERM or SIGINT; return the exit status."""
    config = server_config(layout, database)
    database = config["database"]
    if socket_alive(layout.socket):
        state = load_json(layout.state, {}) or {}
        raise UsageError("the write socket %s is held by a running server%s; stop it first "
                         "(equivcache-server status %s)" % (
                             layout.socket, " (pid %s)" % state["pid"] if "pid" in state else "", layout.root))
    check_port_free(bind, http_port, "http")
    check_port_free(bind, hashserv_port, "hashserv")
    if http_port == hashserv_port:
        raise UsageError("--http-port and --hashserv-port are both %d" % http_port)
    if os.path.exists(layout.socket):
        logger.info("removing the stale socket %s (no server answers on it)", layout.socket)
        os.unlink(layout.socket)

    if public_host is None:
        public_host = bind if loopback_for(bind) == bind else socket.getfqdn()
    public = [tcp_address(public_host, hashserv_port)]
    config["hashserv"] = public
    cache.write_json(layout.config, config, 0o600)
    admin = admin_credentials(layout)
    level = "INFO" if verbose else "WARNING"
    hashserv = import_hashserv(bitbake, layout.private)

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    children = []
    mirror = None
    status = 0
    try:
        # The write endpoint first: it creates the tables, the read one then finds them.
        writer = HashServ("hashserv-write", bitbake, "unix://" + layout.socket, database, WRITE_PERMS, level,
                          layout.private, db_password=db_password)
        children.append(writer)
        writer.wait_ready(hashserv, "unix://" + layout.socket)
        reader = HashServ("hashserv-read", bitbake, tcp_address(bind, hashserv_port), database, READ_PERMS, level,
                          layout.private, admin=admin, db_password=db_password)
        children.append(reader)
        reader.wait_ready(hashserv, tcp_address(loopback_for(bind), hashserv_port))

        mirror = MirrorServer(layout.root, (bind, http_port))
        threading.Thread(target=mirror.serve_forever, daemon=True).start()
        write_descriptor(layout)
        state = {
            "pid": os.getpid(),
            "started": cache.utc_iso(),
            "http": mirror.url,
            "hashserv": tcp_address(bind, hashserv_port),
            "bind": bind,
            "hashserv_port": hashserv_port,
            "public_hashserv": public,
            "socket": "unix://" + layout.socket,
            "database": show_database(database),
        }
        cache.write_json(layout.state, state)
        logger.info("serving %s", layout.root)
        logger.info("  http mirror:     %s (sstate-cache/, downloads/, equivcache.json, index.json)", mirror.url)
        logger.info("  read endpoint:   %s (anonymous %s; admin credentials in %s)",
                    state["hashserv"], READ_PERMS, layout.admin)
        logger.info("  write endpoint:  %s (%s)", state["socket"], WRITE_PERMS)
        logger.info("  database:        %s", state["database"])
        logger.info("  consumers:       equivcache-client --server http://%s:%d",
                    "[%s]" % public_host if ":" in public_host else public_host, mirror.server_address[1])
        while not stop.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    logger.error("%s exited with status %d; stopping", child.name, child.process.returncode)
                    status = 1
                    stop.set()
        if status == 0:
            logger.info("stopping")
    finally:
        if mirror is not None:
            mirror.shutdown()
            mirror.server_close()
        for child in reversed(children):
            child.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.state)
        if os.path.exists(layout.socket) and not socket_alive(layout.socket):
            os.unlink(layout.socket)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


# ---------------------------------------------------------------- status

def database_usage(bitbake, address, workdir):
    hashserv = import_hashserv(bitbake, workdir)
    with contextlib.closing(hashserv.create_client(address)) as client:
        return {table: info["rows"] for table, info in client.get_db_usage().items()}


def sqlite_usage(path):
    if not os.path.exists(path):
        return {}
    with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True)) as db:
        usage = {}
        for table in ("unihashes_v3", "outhashes_v2", "users"):
            try:
                usage[table] = db.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
            except sqlite3.Error:
                pass
        return usage


def status(layout, bitbake=None, out=sys.stdout):
    """Print what is up, where, and how big the cache is. 0: all up;
    3: not running (as systemctl status); 1: running but a part is down."""
    state = running_state(layout)
    database = saved_database(layout)
    writer_up = state is not None and socket_alive(layout.socket)
    lines = []
    code = 0
    if state is None:
        lines.append("equivcache-server: %s is not being served" % layout.root)
        code = 3
    else:
        lines.append("equivcache-server: serving %s (pid %d, since %s)" % (layout.root, state["pid"], state["started"]))
        checks = [
            ("http mirror", state["http"], probe.http(state["http"] + "/equivcache.json", 3) is None),
            ("read endpoint", state["hashserv"] + " (anonymous %s)" % READ_PERMS,
             probe.server(("tcp", loopback_for(state["bind"]), state["hashserv_port"]), 3) is None),
            ("write endpoint", state["socket"], writer_up),
        ]
        for name, where, up in checks:
            lines.append("  %-16s %s  %s" % (name, where, "up" if up else "DOWN"))
            if not up:
                code = 1
        lines.append("  %-16s %s" % ("consumers use", ", ".join(state.get("public_hashserv", []))))
    usage = None
    if bitbake and writer_up:
        try:
            usage = database_usage(bitbake, "unix://" + layout.socket, layout.private)
        except Exception as e:   # a status must say what it can
            lines.append("  database usage unavailable: %s" % e)
    elif is_sqlite(database):
        usage = sqlite_usage(database)
    line = "  %-16s %s" % ("database", show_database(database))
    if usage:
        line += "  (%s)" % ", ".join("%s %d" % (k, v) for k, v in sorted(usage.items()))
    lines.append(line)
    objects = sizes = 0
    for _, size, parsed in cache.sstate_files(layout.sstate):
        if parsed[3] == "object":
            objects += 1
            sizes += size
    lines.append("  %-16s %d objects, %s" % ("sstate-cache", objects, cache.human(sizes)))
    files = total = 0
    for _, size in cache.download_files(layout.downloads):
        files += 1
        total += size
    lines.append("  %-16s %d files, %s" % ("downloads", files, cache.human(total)))
    doc = load_json(layout.descriptor)
    lines.append("  %-16s %s" % ("descriptor", ("generated " + doc.get("generated", "?")) if doc else "none yet"))
    out.write("\n".join(lines) + "\n")
    return code


# ---------------------------------------------------------------- publish

class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, what, total, stream=sys.stderr):
        self.what, self.total, self.stream = what, total, stream
        self.tty = stream.isatty() and total > 0
        self.done = 0
        self.shown = -1

    def step(self, n=1):
        self.done += n
        if not self.tty:
            return
        percent = self.done * 100 // self.total
        if percent != self.shown:
            self.shown = percent
            bar = "#" * (percent // 4)
            self.stream.write("\r%-22s [%-25s] %3d%% %d/%d" % (self.what, bar, percent, self.done, self.total))
            self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def copy_tree(files, source, target, what):
    """Copy (relative path, size) files that target lacks (or has with
    another size): to a temporary name, then renamed, so that the mirror
    never serves a partial file. Returns (copied, bytes, present)."""
    copied = size = present = 0
    progress = Progress(what, len(files))
    for rel, length in files:
        dest = os.path.join(target, rel)
        try:
            if os.path.getsize(dest) == length:
                present += 1
                progress.step()
                continue
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = os.path.join(os.path.dirname(dest), ".tmp-%d-%s" % (os.getpid(), os.path.basename(dest)[-40:]))
        try:
            shutil.copy2(os.path.join(source, rel), tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        copied += 1
        size += length
        progress.step()
    progress.close()
    return copied, size, present


def read_producer_database(path):
    """(outhash rows oldest first, {(method, taskhash): unihash}) of a producer's hashserv SQLite database."""
    if not os.path.isfile(path):
        raise UsageError("no hash equivalence database at %s (the auto server's is "
                         "PERSISTENT_DIR/hashserv.db; pass --hashserv-db)" % path)
    try:
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True)) as db:
            db.row_factory = sqlite3.Row
            outhashes = [dict(r) for r in db.execute(
                "SELECT method, taskhash, outhash, created, owner, PN, PV, PR, task, outhash_siginfo "
                "FROM outhashes_v2 ORDER BY created, id")]
            unihashes = {(r["method"], r["taskhash"]): r["unihash"]
                         for r in db.execute("SELECT method, taskhash, unihash FROM unihashes_v3 ORDER BY id")}
    except sqlite3.Error as e:
        raise UsageError("%s is not a hashserv database this layer reads (%s)" % (path, e))
    return outhashes, unihashes


def merge_database(client, outhashes, unihashes):
    """Report the producer's entries to the server through its write
    endpoint, the way builds report them: an entry already present is left
    alone (no duplicate), an output the server already knows keeps the
    server's unihash (the objects for it are in the cache), nothing is lost.
    Returns counts."""
    counts = {"outhashes": len(outhashes), "unihashes": len(unihashes), "remapped": 0}
    reported = set()
    progress = Progress("merging equivalences", len(outhashes) + len(unihashes))
    for row in outhashes:
        key = (row["method"], row["taskhash"])
        unihash = unihashes.get(key, row["taskhash"])
        extra = {k: row[k] for k in ("PN", "PV", "PR", "task", "outhash_siginfo") if row.get(k) is not None}
        answer = client.report_unihash(row["taskhash"], row["method"], row["outhash"], unihash, extra)
        if key not in reported and answer["unihash"] != unihash:
            counts["remapped"] += 1
        reported.add(key)
        progress.step()
    for (method, taskhash), unihash in unihashes.items():
        if (method, taskhash) not in reported:
            answer = client.report_unihash_equiv(taskhash, method, unihash)
            if answer and answer.get("unihash") != unihash:
                counts["remapped"] += 1
        progress.step()
    progress.close()
    return counts


@contextlib.contextmanager
def write_endpoint(layout, bitbake, hashserv, database, db_password=None):
    """The address of a write endpoint on the cache's database: the running
    server's socket, else a private bitbake-hashserv for the time of the merge."""
    if socket_alive(layout.socket):
        yield "unix://" + layout.socket
        return
    private = os.path.join(layout.private, "publish-%d.sock" % os.getpid())
    child = HashServ("hashserv-publish", bitbake, "unix://" + private, database, WRITE_PERMS, "WARNING",
                     layout.private, db_password=db_password)
    try:
        child.wait_ready(hashserv, "unix://" + private)
        yield "unix://" + private
    finally:
        child.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(private)


def producer_stamps(builddir):
    """The STAMPS_DIRs of a build directory: TMPDIR/stamps of each tmp* under it."""
    try:
        names = sorted(os.listdir(builddir))
    except FileNotFoundError:
        return []
    return [os.path.join(builddir, n, "stamps") for n in names
            if n.startswith("tmp") and os.path.isdir(os.path.join(builddir, n, "stamps"))]


def publish(layout, bitbake, builddir, sstate_dir=None, downloads_dir=None, hashserv_db=None,
            database=None, db_password=None, out=sys.stdout, stamps_dirs=None):
    """Add a producer build's sstate objects, downloads and equivalences to the cache."""
    if not os.path.isdir(builddir):
        raise UsageError("--from %s: no such build directory" % builddir)
    sstate_dir = os.path.abspath(sstate_dir or os.path.join(builddir, "sstate-cache"))
    if not os.path.isdir(sstate_dir):
        raise UsageError("no sstate cache at %s (pass --sstate-dir with the producer's SSTATE_DIR)" % sstate_dir)
    downloads_dir = os.path.abspath(downloads_dir or os.path.join(builddir, "downloads"))
    hashserv_db = os.path.abspath(hashserv_db or os.path.join(builddir, "cache", "hashserv.db"))
    outhashes, unihashes = read_producer_database(hashserv_db)
    config = server_config(layout, database)
    hashserv = import_hashserv(bitbake, layout.private)

    with open(layout.publish_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Objects first, equivalences after: a consumer that gets a unihash
        # from the server finds its object on the mirror.
        files = [(rel, size) for rel, size, _ in cache.sstate_files(sstate_dir)]
        copied, size, present = copy_tree(files, sstate_dir, layout.sstate, "copying sstate")
        out.write("sstate: %d files copied (%s), %d already present, from %s\n"
                  % (copied, cache.human(size), present, sstate_dir))
        if os.path.isdir(downloads_dir):
            files = list(cache.download_files(downloads_dir))
            copied, size, present = copy_tree(files, downloads_dir, layout.downloads, "copying downloads")
            out.write("downloads: %d files copied (%s), %d already present, from %s\n"
                      % (copied, cache.human(size), present, downloads_dir))
        else:
            out.write("downloads: none at %s (pass --downloads-dir with the producer's DL_DIR)\n" % downloads_dir)
        stamps_dirs = [os.path.abspath(p) for p in stamps_dirs] if stamps_dirs else producer_stamps(builddir)
        for stamps in stamps_dirs:
            if not os.path.isdir(stamps):
                raise UsageError("--stamps-dir %s: no such directory" % stamps)
            files = [(rel, size) for rel, size, _ in cache.sigdata_files(stamps)]
            copied, size, present = copy_tree(files, stamps, layout.siginfo, "copying signatures")
            out.write("signatures: %d files copied (%s), %d already present, from %s\n"
                      % (copied, cache.human(size), present, stamps))
        if not stamps_dirs:
            out.write("signatures: no STAMPS_DIR under %s (pass --stamps-dir with the producer's STAMPS_DIR)\n"
                      % builddir)

        with write_endpoint(layout, bitbake, hashserv, config["database"], db_password) as address:
            with contextlib.closing(hashserv.create_client(address)) as client:
                before = {t: i["rows"] for t, i in client.get_db_usage().items()}
                counts = merge_database(client, outhashes, unihashes)
                after = {t: i["rows"] for t, i in client.get_db_usage().items()}
        new_out = after.get("outhashes_v2", 0) - before.get("outhashes_v2", 0)
        new_uni = after.get("unihashes_v3", 0) - before.get("unihashes_v3", 0)
        out.write("equivalences: %d output hashes (%d new), %d unihashes (%d new) from %s; %d taken "
                  "over by an equivalent output the cache already had\n" % (
                      counts["outhashes"], new_out, counts["unihashes"], new_uni, hashserv_db, counts["remapped"]))

        index = cache.build_index(layout.sstate, siginfo_dir=layout.siginfo)
        cache.write_json(layout.index, index)
        found = cache.newest_build_configuration(builddir)
        producer = None
        if found:
            values, layers, _ = found
            producer = {k: values[k] for k in desc.PRODUCER_KEYS if k in values}
            producer["layers"] = layers
        doc = write_descriptor(layout, producer=producer)
        objects = sum(1 for o in index["objects"] if o["path"])
        out.write("index: %d objects, %d task signatures; descriptor: hashserv %s, nativelsbstrings %s\n" % (
            objects, len(index["signatures"]), ", ".join(doc["hashserv"]),
            " ".join(doc["nativelsbstrings"]) or "none"))
    return 0
