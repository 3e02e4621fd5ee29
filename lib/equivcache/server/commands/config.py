# SPDX-License-Identifier: MIT
#
# equivcache-server config: production configurations for a cache server,
# an nginx site for the http mirror and systemd units for each part, with
# equivcache-server serve's safe defaults (read-only mirror of the published
# names only; anonymous hashserv users may only read; the write endpoint a
# private unix socket). Pure Python: no bb import.

import os
import sys

from equivcache.cli import UsageError, find_bitbake, layer_dir
from equivcache.server import options
from equivcache.server.hashequiv.processes import DEFAULT_HASHSERV_PORT, DEFAULT_HTTP_PORT, DEFAULT_WS_PORT
from equivcache.server.store import is_s3
from equivcache.server.store.layout import Layout, saved_database
from equivcache.uploadapi import DEFAULT_MAX_UPLOAD, REPLICA_FAIL_TIMEOUT

NAME = "config"
HELP = "print production configurations"
SCRIPT = os.path.join(layer_dir(), "scripts", "equivcache-server")

NGINX = """\
# nginx site for the meta-equivcache mirror of {cache}
# (printed by: equivcache-server config --nginx). Install it as
# /etc/nginx/sites-available/equivcache, link it into sites-enabled, and
# `nginx -t && systemctl reload nginx`. The cache directory must be readable
# by nginx's user; {cache}/server/ must not (it holds the credentials).
server {{
{listen}
    server_name {host};

    root {cache};
    autoindex off;
    sendfile on;
    tcp_nopush on;

    # Read-only, but for the upload endpoint and build reports: GET and HEAD only.
    set $equivcache_method $request_method;
    if ($uri ~ ^/upload/v1/) {{ set $equivcache_method GET; }}
    if ($uri = /api/v1/reports) {{ set $equivcache_method GET; }}
    if ($equivcache_method !~ ^(GET|HEAD)$) {{ return 405; }}
{upload}
    # Only what the mirror publishes; everything else is 404.
    location / {{ return 404; }}
    location = /equivcache.json {{ default_type application/json; expires -1; }}
    location = /index.json {{ default_type application/json; expires -1; }}
    location = /durations.json {{ default_type application/json; expires -1; }}
    location /sstate-cache/ {{ default_type application/octet-stream; disable_symlinks on; }}
    location /downloads/ {{ default_type application/octet-stream; disable_symlinks on; }}
    location /siginfo/ {{ default_type application/octet-stream; disable_symlinks on; }}
    location /sstate-index/ {{ default_type application/octet-stream; expires -1; disable_symlinks on; }}
    location /keys/ {{ default_type application/pgp-keys; expires -1; disable_symlinks on; }}
}}
"""

UNIT = """\
### /etc/systemd/system/{unit}
# {what} of the meta-equivcache cache {cache}
# (printed by: equivcache-server config --systemd)
[Unit]
Description=meta-equivcache {what}
After=network-online.target{after}
Wants=network-online.target

[Service]
User={user}
Group={user}
WorkingDirectory={cache}/server
{env}ExecStart={command}
Restart=on-failure
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={cache}
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""

HASHSERV = "{python} {bitbake}/bin/bitbake-hashserv --bind {bind} --database {database} --anon-perms {perms} --log WARNING"

# The admin password of `serve`'s first start, for the same admin user.
ADMIN_ENV = "# HASHSERVER_ADMIN_PASSWORD, as equivcache-server serve generated it (mode 0600).\n" \
            "EnvironmentFile={cache}/server/admin.env\n"


UPLOAD = """
    # Remote producers' uploads (equivcache-server publish --to), passed to
    # equivcache-server serve on loopback, which checks each producer token,
    # path, size and SHA-256. Bodies are streamed, not buffered on disk.
    location /upload/v1/ {{
        client_max_body_size {limit};
        proxy_request_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header Connection "";
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        proxy_pass http://{upstream};
    }}

    # The dashboard, its plots and its JSON API (builds' reports: POST
    # /api/v1/reports, at most 4 MiB), from equivcache-server serve.
    location = / {{ proxy_pass http://{upstream}; }}
    location = /healthz {{ proxy_pass http://{upstream}; }}
    location /plots/ {{ proxy_pass http://{upstream}; }}
    location /api/v1/ {{
        client_max_body_size 4m;
        proxy_set_header Host $host;
        proxy_pass http://{upstream};
    }}
{websocket}"""

WEBSOCKET = """
    # The hash equivalence server over TLS, as upstream recommends: serve's
    # websocket listener (serve --ws-port, loopback), for wss://HOST/ws
    # (serve --public-url https://HOST names it in the descriptor). A build
    # keeps its connection open: idle for up to an hour.
    location = /ws {{
        proxy_pass http://{ws};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
    }}
"""

# Several serve replicas (--replica): nginx spreads the requests over them,
# and a replica that fails is left out for REPLICA_FAIL_TIMEOUT seconds
# (GET /healthz shows why), which publish's retries outlast.
REPLICAS = """\
# The serve replicas of the cache (equivcache-server config --replica): a
# replica that fails is left out for {fail_timeout} s; GET /healthz says what failed.
upstream equivcache_serve {{
{http}
    keepalive 16;
}}
{ws}
"""
WS_UPSTREAM = """upstream equivcache_ws {{
{servers}
}}
"""
# A bucket's cache: consumers read the bucket; serve answers its descriptor.
BUCKET_MIRROR = """    location = /equivcache.json {{ proxy_pass http://{upstream}; }}"""

TLS = """    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;"""


def parse_replica(text, ws_port):
    """(http address, websocket address or None) of --replica HOST:PORT[:WS_PORT]."""
    host, sep, rest = text.rpartition("]") if text.startswith("[") else ("", "", text)
    parts = rest.lstrip(":").split(":") if host else rest.split(":")
    host = host + sep if host else parts.pop(0)
    try:
        ports = [int(p) for p in parts]
    except ValueError:
        ports = []
    if not host or len(ports) not in (1, 2) or not all(0 < p < 65536 for p in ports):
        raise UsageError("--replica %s: HOST:HTTP_PORT, or HOST:HTTP_PORT:WS_PORT" % text)
    ws = ports[1] if len(ports) == 2 else ws_port
    return "%s:%d" % (host, ports[0]), ("%s:%d" % (host, ws) if ws else None)


def upstreams(replicas, ws_port):
    """The upstream blocks of several serve replicas."""
    parsed = [parse_replica(r, ws_port) for r in replicas]
    http = "\n".join("    server %s max_fails=1 fail_timeout=%ds;" % (h, REPLICA_FAIL_TIMEOUT) for h, _ in parsed)
    ws = [w for _, w in parsed if w]
    return REPLICAS.format(fail_timeout=REPLICA_FAIL_TIMEOUT, http=http, ws=WS_UPSTREAM.format(servers="\n".join(
        "    server %s max_fails=1 fail_timeout=%ds;" % (w, REPLICA_FAIL_TIMEOUT) for w in ws)) if ws else ""), bool(ws)


def nginx(cache, host, port, bind=None, upload_port=None, max_upload=None, tls_cert=None, tls_key=None,
          ws_port=DEFAULT_WS_PORT, replicas=(), bucket=False):
    """The site; on every address unless bind names one; with TLS if given
    a certificate and key; with the upload endpoint, the dashboard and the
    hash server's websocket listener (unless ws_port is 0) proxied to
    serve on loopback if upload_port is given, or to several replicas."""
    ssl = " ssl" if tls_cert else ""
    if bind in (None, "", "0.0.0.0", "::"):
        listen = "    listen %d%s;\n    listen [::]:%d%s;" % (port, ssl, port, ssl)
    else:
        listen = "    listen %s:%d%s;" % ("[%s]" % bind if ":" in bind else bind, port, ssl)
    if tls_cert:
        listen += "\n" + TLS.format(cert=tls_cert, key=tls_key)
    head, upstream, ws = "", "127.0.0.1:%s" % upload_port, "127.0.0.1:%s" % ws_port
    if replicas:
        head, has_ws = upstreams(replicas, ws_port)
        upstream, ws = "equivcache_serve", "equivcache_ws" if has_ws else None
    websocket = WEBSOCKET.format(ws=ws) if ws_port and ws else ""
    upload = UPLOAD.format(limit="%dk" % -(-max_upload // 1024), upstream=upstream,
                           websocket=websocket) if upload_port or replicas else ""
    site = NGINX.format(cache=cache, host=host, listen=listen, upload=upload)
    if bucket:   # no directory to serve: the bucket is the mirror
        site = site.replace("The cache directory must be readable\n# by nginx's user; %s/server/ must not (it holds "
                            "the credentials)." % cache, "Consumers read the objects from\n# the bucket; nginx "
                            "passes the rest to serve.")
        start, end = site.index("    root "), site.index("    autoindex off;\n") + len("    autoindex off;\n")
        site = site[:start] + site[end:]
        start, end = site.index("    location = /equivcache.json"), site.index("\n}\n")
        site = site[:start] + BUCKET_MIRROR.format(upstream=upstream) + site[end:]
    return head + site


def systemd(cache, bitbake, python, user, bind, hashserv_port, database):
    """The two hashserv units (write endpoint on a unix socket, read
    endpoint on TCP with anonymous @read and an admin user). The http
    mirror is nginx's job in production (see --nginx)."""
    write = UNIT.format(
        unit="equivcache-hashserv-write.service", what="hash equivalence write endpoint (unix socket, producers)",
        cache=cache, after="", user=user, env="",
        command=HASHSERV.format(python=python, bitbake=bitbake, bind="unix://%s/server/hashserv.sock" % cache,
                                database=database, perms="@read,@report,@db-admin"))
    read = UNIT.format(
        unit="equivcache-hashserv-read.service", what="hash equivalence read endpoint (TCP, consumers)",
        cache=cache, after=" equivcache-hashserv-write.service", user=user, env=ADMIN_ENV.format(cache=cache),
        command=HASHSERV.format(python=python, bitbake=bitbake, bind="%s:%d" % (bind, hashserv_port),
                                database=database, perms="@read") + " --admin-user admin")
    return (write + "\n" + read + "\n# The http mirror: nginx (equivcache-server config --nginx).\n"
            "# systemctl daemon-reload && systemctl enable --now "
            "equivcache-hashserv-write equivcache-hashserv-read\n")


def systemd_all(cache, script, python, user, bind, http_port, hashserv_port):
    """One unit running equivcache-server serve: both endpoints and the http mirror."""
    return UNIT.format(
        unit="equivcache-server.service", what="cache server (both hashserv endpoints and the http mirror), "
        "instead of the units above and nginx", cache=cache, after="", user=user, env="",
        command="%s %s serve --bind %s --http-port %d --hashserv-port %d %s" % (
            python, script, bind, http_port, hashserv_port, cache))


GC = """\
### /etc/systemd/system/equivcache-gc.service
# equivcache-server gc of the meta-equivcache cache {cache}, within the bound
# the last `equivcache-server gc --max-size SIZE / --older-than DAYS` remembered
# (printed by: equivcache-server config --systemd). Set the bound once by hand.
[Unit]
Description=meta-equivcache gc of {cache}

[Service]
Type=oneshot
User={user}
Group={user}
WorkingDirectory={cache}/server
ExecStart={python} {script} --bitbake {bitbake} gc {cache}
Nice=10
IOSchedulingClass=idle
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={cache}
PrivateTmp=yes

### /etc/systemd/system/equivcache-gc.timer
[Unit]
Description=daily meta-equivcache gc of {cache}

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
# systemctl daemon-reload && systemctl enable --now equivcache-gc.timer
"""


def systemd_gc(cache, script, python, user, bitbake):
    """A oneshot gc service and the daily timer that starts it."""
    return GC.format(cache=cache, script=script, python=python, user=user, bitbake=bitbake)


def setup_parser(p):
    p.description = ("Print a ready nginx site for the mirror (--nginx) or systemd units for each part with a "
                     "daily gc timer (--systemd), with serve's safe defaults.")
    p.epilog = "example: %s config --nginx --public-host cache.example.com /srv/yocto-cache" % options.PROG
    options.add_cache(p, help="the cache directory, or s3://BUCKET/PREFIX (--nginx with --replica)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--nginx", action="store_true", help="an nginx site serving the mirror")
    what.add_argument("--systemd", action="store_true", help="systemd units for the hashserv endpoints, "
                      "one for the whole server, and a daily timer for gc")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDRESS", help="address to listen on (default: every one)")
    p.add_argument("--http-port", type=options.port, default=DEFAULT_HTTP_PORT, help="mirror port")
    p.add_argument("--hashserv-port", type=options.port, default=DEFAULT_HASHSERV_PORT, help="read endpoint port")
    p.add_argument("--public-host", default="_", metavar="HOST", help="(nginx) server_name")
    p.add_argument("--serve-port", "--upload-port", dest="upload_port", type=options.port, metavar="PORT",
                   help="(nginx) proxy the upload endpoint (/upload/v1/) and the dashboard (/, /plots/, /api/v1/) "
                   "to equivcache-server serve's http port on 127.0.0.1 (serve --bind 127.0.0.1 --http-port PORT)")
    p.add_argument("--ws-port", type=options.port_or_off, default=DEFAULT_WS_PORT, metavar="PORT",
                   help="(nginx, with --serve-port) proxy /ws, the hash server for wss:// clients, to serve's "
                   "websocket listener on 127.0.0.1 (as serve --ws-port; 0: none; default: %(default)s)")
    p.add_argument("--replica", action="append", default=[], metavar="HOST:PORT[:WS_PORT]",
                   help="(nginx) proxy to several serve replicas of the cache (one per option: each one's http port, "
                   "and its websocket port if not --ws-port), instead of one on 127.0.0.1; they share one "
                   "PostgreSQL database (serve --database) and one bucket or directory")
    p.add_argument("--max-upload-size", type=options.size, default=DEFAULT_MAX_UPLOAD, metavar="SIZE",
                   help="(nginx) the largest upload body nginx passes on (default: 8G; as serve's)")
    p.add_argument("--tls-cert", metavar="FILE", help="(nginx) serve https with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="(nginx) the certificate's private key")
    p.add_argument("--user", default="equivcache", help="(systemd) the user the services run as")


def run(args, out=sys.stdout):
    bucket = is_s3(args.cache_dir)
    root = args.cache_dir if bucket else os.path.abspath(args.cache_dir)
    if args.nginx:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        if bucket and not (args.replica or args.upload_port):
            raise UsageError("a cache in a bucket: name its serve replicas (--replica) or its serve (--serve-port); "
                             "consumers read the objects from the bucket")
        out.write(nginx(root, args.public_host, args.http_port, args.bind, args.upload_port, args.max_upload_size,
                        args.tls_cert and os.path.abspath(args.tls_cert), args.tls_key and os.path.abspath(args.tls_key),
                        args.ws_port, args.replica, bucket))
        return 0
    if bucket:
        raise UsageError("--systemd: for a cache directory (a bucket's serve replicas: serve --database)")
    bitbake = find_bitbake(args.bitbake)
    database = saved_database(Layout(root))
    out.write(systemd(root, bitbake, sys.executable, args.user, args.bind, args.hashserv_port, database))
    out.write("\n" + systemd_all(root, SCRIPT, sys.executable, args.user, args.bind, args.http_port,
                                  args.hashserv_port))
    out.write("\n" + systemd_gc(root, SCRIPT, sys.executable, args.user, bitbake))
    return 0
