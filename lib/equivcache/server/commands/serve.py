# SPDX-License-Identifier: MIT
#
# equivcache-server serve: the cache server (http/serve.py) in the foreground.

from equivcache.cli import find_bitbake
from equivcache.server import options
import argparse

from equivcache.server.hashequiv.processes import DEFAULT_HASHSERV_PORT, DEFAULT_HTTP_PORT, DEFAULT_WS_PORT
from equivcache.server.store.history import MAX_DAYS, MAX_ROWS
from equivcache.server.store.layout import save_config, saved_config
from equivcache.uploadapi import DEFAULT_MAX_UPLOAD

NAME = "serve"
HELP = "serve the cache in the foreground"


def setup_parser(p):
    p.description = (
        "Serve CACHE_DIR until Ctrl-C or SIGTERM: the http mirror, a read-only "
        "bitbake-hashserv on TCP (anonymous users may only read; the users of producer tokens "
        "may report; an admin user, whose credentials are generated on first start into "
        "CACHE_DIR/server/admin.json, mode 0600, may write), a write endpoint on the unix socket "
        "CACHE_DIR/server/hashserv.sock (only this user can reach it), and, while the cache has "
        "a producer token (see token), an upload endpoint under /upload/v1/ on the http port "
        "for publish --to, and a dashboard at / (what the cache gave the builds that report to it "
        "with EQUIVCACHE_REPORT_TO, its size, its publishes; JSON under /api/v1/). Logs go to "
        "stderr and CACHE_DIR/server/serve.log. Refuses (status 2) a socket a live server holds or a "
        "port in use.")
    p.epilog = "example: %s serve --bind 0.0.0.0 --public-host cache.example.com /srv/yocto-cache" % options.PROG
    options.add_cache(p, help="the cache directory (created if absent), or s3://BUCKET/PREFIX (see --state-dir)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for every interface)")
    p.add_argument("--http-port", type=options.port, default=DEFAULT_HTTP_PORT,
                   help="http mirror port (default: %(default)s)")
    p.add_argument("--hashserv-port", type=options.port, default=DEFAULT_HASHSERV_PORT,
                   help="read endpoint port (default: %(default)s)")
    p.add_argument("--ws-port", type=options.port_or_off, default=DEFAULT_WS_PORT, metavar="PORT",
                   help="the read endpoint again as a websocket listener on 127.0.0.1, for a TLS proxy's /ws "
                   "(config --nginx; needs python3-websockets; 0: none; default: %(default)s)")
    p.add_argument("--ws-bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address of the websocket listener (default: %(default)s; the address a proxy on another "
                   "machine reaches this replica at, for several replicas behind one proxy)")
    p.add_argument("--public-host", metavar="HOST", help="host name consumers use, written into the "
                   "descriptor (default: the --bind address, or this machine's name if that is a wildcard)")
    p.add_argument("--public-url", metavar="URL", help="the https:// URL consumers and producers reach the cache "
                   "at through a TLS proxy (config --nginx --tls-cert): the descriptor then names its wss://URL/ws "
                   "as the hash server, and no plain address")
    p.add_argument("--require-signatures", action=argparse.BooleanOptionalAction, default=None,
                   help="take only sstate objects signed by the uploading producer's key (token add --gpg-key), "
                   "and have consumers verify them (remembered; default: off)")
    p.add_argument("--reports-need-token", action=argparse.BooleanOptionalAction, default=None,
                   help="take build reports only with a producer or reporter token (EQUIVCACHE_REPORT_TOKEN_FILE; "
                   "remembered; default: off)")
    p.add_argument("--max-upload-size", type=options.size, default=DEFAULT_MAX_UPLOAD, metavar="SIZE",
                   help="the largest file a producer may upload (default: 8G)")
    p.add_argument("--no-reports", action="store_true", help="refuse the build reports of EQUIVCACHE_REPORT_TO "
                   "(the dashboard shows publishes, gc and the cache only)")
    p.add_argument("--history-rows", type=options.positive_int, metavar="N", help="keep at most N build reports "
                   "(and N publishes, N gc runs) for the dashboard (default: %d; remembered)" % MAX_ROWS)
    p.add_argument("--history-days", type=options.positive_int, metavar="DAYS", help="forget reports, publishes "
                   "and gc runs older than DAYS (default: %d; remembered)" % MAX_DAYS)
    options.add_database(p)
    options.add_s3(p)


def run(args):
    bitbake, password = find_bitbake(args.bitbake), options.db_password(args)
    cache = options.cache_of(args, create=True)
    options.setup_logging(args, cache.layout)
    config = saved_config(cache.layout)
    bounds = config.setdefault("history", {})
    if args.history_rows is not None:
        bounds["max_rows"] = args.history_rows
    if args.history_days is not None:
        bounds["max_days"] = args.history_days
    for key in ("require_signatures", "reports_need_token"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    save_config(cache.layout, config)
    from equivcache.server.http.serve import serve   # here: the http server's modules, for serve only
    return serve(cache, bitbake, args.bind, args.http_port, args.hashserv_port, args.public_host,
                 args.database, password, args.verbose, args.max_upload_size, not args.no_reports,
                 args.ws_port, args.public_url, args.ws_bind)
