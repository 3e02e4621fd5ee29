# SPDX-License-Identifier: MIT
#
# The cache server that equivcache-server serve runs: the cache's http
# mirror (with uploads and the dashboard) and its two bitbake-hashserv
# endpoints, in the foreground until SIGTERM or SIGINT.

import contextlib
import logging
import os
import signal
import socket
import threading

from equivcache import files
from equivcache.cli import UsageError
from equivcache.formatting import human, utc_iso
from equivcache.server.hashequiv.database import show_database, unihashes_named, usage
from equivcache.server.hashequiv.processes import (DEFAULT_HASHSERV_PORT, DEFAULT_HTTP_PORT, READ_PERMS, WRITE_PERMS, HashServ,
                                         check_port_free, import_hashserv, loopback_for, socket_alive, tcp_address)
from equivcache.reportsend import PATH as REPORTS
from equivcache.server.http.dashboard import Dashboard
from equivcache.server.store.history import open_history
from equivcache.server.store.layout import admin_credentials, load_json, save_config, server_config
from equivcache.server.store.storage import PUBLIC
from equivcache.server.hashequiv.tokens import TokenStore
from equivcache.server.http.uploads import DEFAULT_MAX_UPLOAD, PREFIX, CacheHTTPServer

logger = logging.getLogger("equivcache.server")


def serve(cache, bitbake, bind="127.0.0.1", http_port=DEFAULT_HTTP_PORT, hashserv_port=DEFAULT_HASHSERV_PORT,
          public_host=None, database=None, db_password=None, verbose=False, max_upload=DEFAULT_MAX_UPLOAD,
          accept_reports=True):
    """Serve the cache until SIGTERM or SIGINT; return the exit status."""
    layout = cache.layout
    config = server_config(layout, database)
    database = config["database"]
    refuse_taken(layout, bind, http_port, hashserv_port)
    if public_host is None:
        public_host = bind if loopback_for(bind) == bind else socket.getfqdn()
    public = [tcp_address(public_host, hashserv_port)]
    config["hashserv"] = public
    save_config(layout, config)
    admin = admin_credentials(layout)
    level = "INFO" if verbose else "WARNING"
    hashserv = import_hashserv(bitbake)

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

        mirror = http_server(cache, hashserv, config, db_password, bind, http_port, max_upload, accept_reports)
        threading.Thread(target=mirror.serve_forever, daemon=True).start()
        cache.write_descriptor()
        state = {
            "pid": os.getpid(),
            "started": utc_iso(),
            "http": mirror.url,
            "hashserv": tcp_address(bind, hashserv_port),
            "bind": bind,
            "hashserv_port": hashserv_port,
            "public_hashserv": public,
            "socket": "unix://" + layout.socket,
            "database": show_database(database),
        }
        files.write_json(layout.state, state)
        log_banner(cache, mirror, state, public_host, max_upload, accept_reports)
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


def refuse_taken(layout, bind, http_port, hashserv_port):
    """UsageError if a live server holds the write socket or a port is in use; a stale socket is removed."""
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


def http_server(cache, hashserv, config, db_password, bind, http_port, max_upload, accept_reports):
    """The cache's http server (mirror, uploads, dashboard), not yet serving."""
    socket_address = "unix://" + cache.layout.socket

    def named(unihashes):
        with contextlib.closing(hashserv.create_client(socket_address)) as client:
            return unihashes_named(client, unihashes)

    def hashserv_rows():
        with contextlib.closing(hashserv.create_client(socket_address)) as client:
            return usage(client)
    board = Dashboard(open_history(cache.layout, config, db_password), cache.state, hashserv_rows, accept_reports)
    return CacheHTTPServer(cache, (bind, http_port), TokenStore(cache.layout.private), max_upload, named, board)


def log_banner(cache, mirror, state, public_host, max_upload, accept_reports):
    """What serve says when it is up: each part, where, and how consumers use it."""
    layout = cache.layout
    logger.info("serving %s", layout.root)
    logger.info("  http mirror:     %s (%s)", mirror.url,
                ", ".join(name if "." in name else name + "/" for name in PUBLIC))
    producers = len(mirror.tokens.active("producer"))
    logger.info("  upload endpoint: %s%s (%s)", mirror.url, PREFIX,
                "%d producer tokens, at most %s a file" % (producers, human(max_upload)) if producers
                else "off until a producer token is added: equivcache-server token add NAME %s" % layout.root)
    logger.info("  dashboard:       %s/ (build reports %s, kept in %s)", mirror.url,
                "taken at %s%s" % (mirror.url, REPORTS) if accept_reports else "refused (--no-reports)",
                mirror.dashboard.history.where())
    logger.info("  read endpoint:   %s (anonymous %s; admin credentials in %s)",
                state["hashserv"], READ_PERMS, layout.admin)
    logger.info("  write endpoint:  %s (%s)", state["socket"], WRITE_PERMS)
    logger.info("  database:        %s", state["database"])
    logger.info("  consumers:       equivcache-client --server http://%s:%d",
                "[%s]" % public_host if ":" in public_host else public_host, mirror.server_address[1])
