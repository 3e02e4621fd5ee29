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
import time
import urllib.parse

from equivcache import descriptor as desc, files
from equivcache.cli import UsageError
from equivcache.formatting import human, utc_iso
from equivcache.server.hashequiv.database import merge_database, show_database, unihashes_named, usage
from equivcache.server.hashequiv.processes import (DEFAULT_HASHSERV_PORT, DEFAULT_HTTP_PORT, DEFAULT_WS_PORT, READ_PERMS,
                                                  WRITE_PERMS, WS_BIND, HashServ, check_port_free, import_hashserv,
                                                  loopback_for, socket_alive, tcp_address)
from equivcache.reportsend import PATH as REPORTS
from equivcache.server.http.dashboard import Dashboard
from equivcache.server.http.handoff import UploadWorker
from equivcache.server.store.history import open_history
from equivcache.server.store.ledger import note_used
from equivcache.server.store.layout import admin_credentials, load_json, save_config, server_config, token_store
from equivcache.server.store.storage import PUBLIC
from equivcache.server.hashequiv.tokens import delete_expired_users
from equivcache.server.http.uploads import PREFIX, UPLOAD_NICE, CacheHTTPServer
from equivcache.uploadapi import DEFAULT_MAX_UPLOAD

logger = logging.getLogger("equivcache.server")


def public_addresses(public_url, public_host, bind, hashserv_port, ws_port):
    """The hash server addresses the descriptor names: behind a proxy at
    public_url, its websocket path (wss:// for https); else the read endpoint."""
    if public_url:
        parts = urllib.parse.urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise UsageError("--public-url %s: the http(s):// URL consumers reach the cache at, through the proxy "
                             "(config --nginx)" % public_url)
        if not ws_port:
            raise UsageError("--public-url needs the websocket listener (--ws-port other than 0)")
        return ["%s://%s%s/ws" % ("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path.rstrip("/"))]
    if public_host is None:
        public_host = bind if loopback_for(bind) == bind else socket.getfqdn()
    return [tcp_address(public_host, hashserv_port)]


def start_hashserv(children, layout, bitbake, hashserv, database, db_password, level, bind, hashserv_port, ws_port,
                   ws_bind=WS_BIND):
    """The write endpoint first (it creates the tables, the others then find
    them), then the read endpoint and the websocket listener (loopback, for
    a TLS proxy), each appended to children once it answers. The write
    endpoint (publish's merges, gc, tokens: nobody's build waits on it)
    yields the CPU to the read endpoints' lookups, as uploads yield it to
    the mirror's readers."""
    writer = HashServ("hashserv-write", bitbake, "unix://" + layout.socket, database, WRITE_PERMS, level,
                      layout.private, db_password=db_password, nice=UPLOAD_NICE)
    children.append(writer)
    writer.wait_ready(hashserv, "unix://" + layout.socket)
    admin = admin_credentials(layout)
    listeners = [("hashserv-read", tcp_address(bind, hashserv_port), tcp_address(loopback_for(bind), hashserv_port))]
    if ws_port:
        listeners.append(("hashserv-ws", "ws://" + tcp_address(ws_bind, ws_port),
                          "ws://" + tcp_address(loopback_for(ws_bind), ws_port)))
    for name, address, reach in listeners:
        child = HashServ(name, bitbake, address, database, READ_PERMS, level, layout.private, admin=admin,
                         db_password=db_password)
        children.append(child)
        child.wait_ready(hashserv, reach or address)


def serve(cache, bitbake, bind="127.0.0.1", http_port=DEFAULT_HTTP_PORT, hashserv_port=DEFAULT_HASHSERV_PORT,
          public_host=None, database=None, db_password=None, verbose=False, max_upload=DEFAULT_MAX_UPLOAD,
          accept_reports=True, ws_port=DEFAULT_WS_PORT, public_url=None, ws_bind=WS_BIND):
    """Serve the cache until SIGTERM or SIGINT; return the exit status."""
    layout = cache.layout
    config = server_config(layout, database)
    database = config["database"]
    refuse_taken(layout, bind, http_port, hashserv_port, ws_port, ws_bind, cache.root)
    config["hashserv"] = public_addresses(public_url, public_host, bind, hashserv_port, ws_port)
    save_config(layout, config)
    hashserv = import_hashserv(bitbake)

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    children = []
    mirror = None
    status = 0
    try:
        start_hashserv(children, layout, bitbake, hashserv, database, db_password, "INFO" if verbose else "WARNING",
                       bind, hashserv_port, ws_port, ws_bind)
        mirror = http_server(cache, hashserv, config, db_password, bind, http_port, max_upload, accept_reports)
        mirror.worker = UploadWorker(mirror)   # forked before the mirror serves
        mirror.health = lambda: health(cache, children, mirror.worker)
        threading.Thread(target=mirror.serve_forever, daemon=True).start()
        cache.write_descriptor()
        state = {
            "pid": os.getpid(),
            "started": utc_iso(),
            "http": mirror.url,
            "hashserv": tcp_address(bind, hashserv_port),
            "websocket": "ws://" + tcp_address(ws_bind, ws_port) if ws_port else None,
            "bind": bind,
            "hashserv_port": hashserv_port,
            "public_hashserv": config["hashserv"],
            "socket": "unix://" + layout.socket,
            "database": show_database(database),
        }
        files.write_json(layout.state, state)
        log_banner(cache, mirror, state, config)
        status = watch(stop, children, mirror, hashserv, state["hashserv"], layout)
    finally:
        if mirror is not None:
            mirror.shutdown()
            mirror.server_close()
            if mirror.worker is not None:
                mirror.worker.stop()
        for child in reversed(children):
            child.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.state)
        if os.path.exists(layout.socket) and not socket_alive(layout.socket):
            os.unlink(layout.socket)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


def health(cache, children, worker=None):
    """GET /healthz: (200 or 503, {"status", "parts": {name: up}}): every
    bitbake-hashserv listener running, the upload worker, the write socket
    answering, the storage answering (a bucket: one HEAD)."""
    parts = {child.name: child.process.poll() is None for child in children}
    if worker is not None:
        parts["upload worker"] = worker.alive()
    parts["write socket"] = socket_alive(cache.layout.socket)
    try:
        cache.storage.sizes([desc.NAME])
        parts["storage"] = True
    except Exception:   # a storage error of any kind: what a load balancer needs is the answer
        parts["storage"] = False
    ok = all(parts.values())
    return (200 if ok else 503), {"status": "ok" if ok else "unhealthy", "parts": parts}


def watch(stop, children, mirror, hashserv, address, layout):
    """Until stop: 1 if a hashserv child exits; each minute, the hashserv
    users of tokens that expired are deleted."""
    last_sweep = 0
    while not stop.wait(0.5):
        for child in children:
            if child.process.poll() is not None:
                logger.error("%s exited with status %d; stopping", child.name, child.process.returncode)
                return 1
        if time.monotonic() - last_sweep >= 60:
            last_sweep = time.monotonic()
            try:
                for name in delete_expired_users(mirror.tokens, hashserv, loopback_address(address),
                                                 admin_credentials(layout)):
                    logger.info("token %s expired: its hash server user is deleted", name)
            except Exception as e:   # hashserv's client raises what its transport raises
                logger.warning("could not delete the hash server users of expired tokens: %s", e)
    logger.info("stopping")
    return 0


def loopback_address(address):
    host, _, port = address.rpartition(":")
    return tcp_address(loopback_for(host.strip("[]")), int(port))


def refuse_taken(layout, bind, http_port, hashserv_port, ws_port=0, ws_bind=WS_BIND, root=None):
    """UsageError if a live server holds the write socket or a port is in use; a stale socket is removed."""
    if socket_alive(layout.socket):
        state = load_json(layout.state, {}) or {}
        raise UsageError("the write socket %s is held by a running server%s; stop it first "
                         "(equivcache-server status %s)" % (
                             layout.socket, " (pid %s)" % state["pid"] if "pid" in state else "", root or layout.root))
    check_port_free(bind, http_port, "http")
    check_port_free(bind, hashserv_port, "hashserv")
    if ws_port:
        check_port_free(ws_bind, ws_port, "websocket")
    ports = [p for p in (http_port, hashserv_port, ws_port) if p]
    if len(set(ports)) != len(ports):
        raise UsageError("--http-port, --hashserv-port and --ws-port must differ (%s)" % ", ".join(map(str, ports)))
    if os.path.exists(layout.socket):
        logger.info("removing the stale socket %s (no server answers on it)", layout.socket)
        os.unlink(layout.socket)


def http_server(cache, hashserv, config, db_password, bind, http_port, max_upload, accept_reports):
    """The cache's http server (mirror, uploads, dashboard), not yet serving."""
    socket_address = "unix://" + cache.layout.socket

    def named(unihashes):
        with contextlib.closing(hashserv.create_client(socket_address)) as client:
            return unihashes_named(client, unihashes)

    def merge(outhashes, unihashes):   # one report at a time: the hash server answers lookups in between
        return merge_database(hashserv, socket_address, outhashes, unihashes, connections=1, progress=False)

    def hashserv_rows():
        with contextlib.closing(hashserv.create_client(socket_address)) as client:
            return usage(client)
    board = Dashboard(open_history(cache.layout, config, db_password), cache.state, hashserv_rows, accept_reports,
                      lambda unihashes: note_used(cache.layout, unihashes))
    return CacheHTTPServer(cache, (bind, http_port), token_store(cache.layout), max_upload, named, board,
                           bool(config.get("reports_need_token")), bool(config.get("require_signatures")), merge)


def log_banner(cache, mirror, state, config):
    """What serve says when it is up: each part, where, and how consumers use it."""
    layout = cache.layout
    logger.info("serving %s%s", cache.root, " (this replica's directory: %s)" % layout.root
                if layout.shared else "")
    logger.info("  http mirror:     %s (%s)", mirror.url,
                ", ".join(name if "." in name else name + "/" for name in PUBLIC))
    producers = mirror.tokens.active("producer")
    logger.info("  upload endpoint: %s%s (%s)", mirror.url, PREFIX,
                "%d producer tokens, at most %s a file" % (len(producers), human(mirror.max_upload)) if producers
                else "off until a producer token is added: equivcache-server token add NAME %s" % cache.root)
    if mirror.signed:
        logger.info("  signatures:      required: each object signed by its producer's key (%d of %d producers "
                    "have one)", len(mirror.tokens.keyrings()), len(producers))
    logger.info("  dashboard:       %s/ (build reports %s, kept in %s)", mirror.url,
                ("taken at %s%s%s" % (mirror.url, REPORTS, " with a producer or reporter token"
                                      if mirror.reports_need_token else "")) if mirror.dashboard.accept_reports
                else "refused (--no-reports)", mirror.dashboard.history.where())
    logger.info("  read endpoint:   %s (anonymous %s; admin credentials in %s)",
                state["hashserv"], READ_PERMS, layout.where(layout.admin))
    if state["websocket"]:
        logger.info("  websocket:       %s (the same, for a TLS proxy's /ws: config --nginx)", state["websocket"])
    logger.info("  write endpoint:  %s (%s)", state["socket"], WRITE_PERMS)
    logger.info("  database:        %s", state["database"])
    logger.info("  consumers:       hash server %s; equivcache-client --server URL (this mirror, or the proxy's)",
                ", ".join(config["hashserv"]))
