# SPDX-License-Identifier: MIT
#
# equivcache-server's command line: publish a producer's build into a shared
# cache and serve it (the real bitbake-hashserv beside an http sstate and
# downloads mirror); status and production configurations. scripts/
# equivcache-server calls main().

import argparse
import logging
import os
import sys

from equivcache.cli import Parser, UsageError, find_bitbake, layer_dir, run
from equivcache.server import prodconfig
from equivcache.server.endpoints import DEFAULT_HASHSERV_PORT, DEFAULT_HTTP_PORT
from equivcache.server.gc import DEFAULT_GRACE_DAYS, DEFAULT_KEEP_PUBLISHES, check, gc, parse_size
from equivcache.server.cache import Cache
from equivcache.server.history import MAX_DAYS, MAX_ROWS
from equivcache.server.layout import Layout, check_cache_dir, save_config, saved_config, saved_database
from equivcache.server import token_command
from equivcache.server.publish import publish
from equivcache.server.remote import publish_remote
from equivcache.server.s3cache import S3Cache, is_s3
from equivcache.server.uploads import DEFAULT_MAX_UPLOAD
from equivcache.server.serve import serve
from equivcache.server.status import status

SCRIPT = os.path.join(layer_dir(), "scripts", "equivcache-server")

PROG = "equivcache-server"

DESCRIPTION = """\
Publish and serve a shared Yocto cache: sstate objects and downloads over
http, with the hash equivalence server that names them.

  publish   add a producer build's sstate objects, downloads, signature
            data and hash equivalences to CACHE_DIR, or (--to URL) upload
            them to a cache served elsewhere; refresh its descriptor
            (equivcache.json), object index (index.json) and the sstate
            index builds check the mirror with (sstate-index/)
  serve     serve CACHE_DIR in the foreground until Ctrl-C or SIGTERM:
              http mirror     sstate-cache/, sstate-index/, downloads/, siginfo/,
                              equivcache.json, index.json
              read endpoint   bitbake-hashserv on TCP, anonymous @read only
              write endpoint  bitbake-hashserv on CACHE_DIR/server/hashserv.sock
              uploads         /upload/v1/ on the http port, for producer tokens only
  token     add, list or revoke the producer tokens remote publishes use
  gc        keep the cache within a bound (size, age): least recently used
            objects go, with their index entries; their equivalences a
            grace period later, through hashserv's own gc-mark/gc-sweep
  check     is every index entry's file there, every object's equivalence?
  status    what is up, where, and how big the cache is (against gc's bound)
  config    print an nginx site (--nginx) or systemd units (--systemd,
            with a daily timer for gc)
"""

EPILOG = """\
The seed guide's whole setup, on the producer's machine:
  %(prog)s publish --from ~/poky/build /srv/yocto-cache
  %(prog)s serve --bind 0.0.0.0 /srv/yocto-cache
and on each consumer, in its build directory:
  equivcache-client --server http://cache.example.com:8080

A CI farm: on the cache's machine, a token per producer (printed once):
  %(prog)s token add ci-agent-1 /srv/yocto-cache > ci-agent-1.token
and on the agent, after each build:
  %(prog)s publish --from build --to http://cache.example.com:8080 \
      --token-file ci-agent-1.token

bitbake-hashserv comes from poky: source oe-init-build-env first, or set
BITBAKEDIR or POKY_DIR, or pass --bitbake. Exit status: 0 success, 1 failure,
2 bad usage (nothing changed), 3 (status) not being served; (gc, check)
1 also when the check finds a fault.
"""


def whole_number(what, low, high=None):
    """An argparse type: an integer in [low, high], else a one-line error naming `what`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s %r is not a whole number" % (what, text))
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError("%s %d is not in %d-%d" % (what, value, low, high) if high is not None
                                             else "%s %d: at least %d" % (what, value, low))
        return value
    return parse


port = whole_number("port", 1, 65535)
positive_int = whole_number("count", 1)


def make_parser():
    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG % {"prog": PROG}, formatter_class=formatter)
    parser.add_argument("--bitbake", metavar="DIR", help="poky's bitbake directory (default: the bitbake on PATH, "
                        "$BITBAKEDIR, $POKY_DIR/bitbake, or poky beside this layer)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (every hashserv connection)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("publish", help="add a producer build to the cache", formatter_class=formatter,
                       description="Add a producer build's sstate objects and downloads to CACHE_DIR (copied "
                       "under temporary names, then renamed: the mirror never serves a partial file), then "
                       "copy the signature data of the tasks it ran (its STAMPS_DIR's *.sigdata.*, which "
                       "equivcache-doctor compares with a consumer's), then "
                       "merge its hash equivalence database into the cache's through a write endpoint (the "
                       "running server's, or a private one): entries already present are left alone, none "
                       "is lost. Refreshes equivcache.json, index.json and sstate-index/. Safe while serve runs; two "
                       "publishes take turns.\n\n"
                       "With --to URL instead of CACHE_DIR, publish to a cache served elsewhere: one request "
                       "asks which files it lacks, only those are uploaded (each checked by size and SHA-256 "
                       "before it takes its name), the equivalences are reported to the cache's hash server as "
                       "the token's user, and one commit refreshes the cache's indexes. A second publish of "
                       "the same build uploads nothing.\n\n"
                       "The producer's SSTATE_DIR, DL_DIR, STAMPS_DIR and hash equivalence database are those "
                       "bitbake resolves for BUILDDIR (local.conf, site.conf, auto.conf: its configuration "
                       "parse, a few seconds) unless given; a directory without conf/local.conf is read as "
                       "BUILDDIR/sstate-cache, downloads, tmp*/stamps and cache/hashserv.db. The producer's buildstats "
                       "(USER_CLASSES += \"buildstats\") time each object's task: the cache's durations.json, "
                       "from which consumers' build reports say what the cache saved them.",
                       epilog="examples:\n  %(p)s publish --from ~/poky/build /srv/yocto-cache\n"
                       "  %(p)s publish --from build --to http://cache.example.com:8080 --token-file ci-1.token"
                       % {"p": PROG})
    p.set_defaults(func=cmd_publish)
    p.add_argument("cache_dir", metavar="CACHE_DIR", nargs="?", help="the cache directory (created if absent), or s3://BUCKET/PREFIX "
                   "(see --state-dir)")
    p.add_argument("--from", dest="builddir", metavar="BUILDDIR", required=True,
                   help="the producer's build directory (TOPDIR)")
    p.add_argument("--to", metavar="URL", help="the http(s) address of a cache served elsewhere (as "
                   "equivcache-client --server takes it), instead of CACHE_DIR")
    p.add_argument("--token-file", metavar="FILE", help="(with --to) the producer token, as `token add` "
                   "printed it (one line NAME:SECRET)")
    p.add_argument("--hashserv", metavar="ADDRESS", help="(with --to) the cache's hash server, HOST:PORT "
                   "(default: the first of its descriptor)")
    p.add_argument("--no-equivalences", action="store_true", help="(with --to) send no equivalences: the "
                   "build reported them to a hash server itself")
    p.add_argument("--sstate-dir", metavar="DIR", help="the producer's SSTATE_DIR (default: bitbake's)")
    p.add_argument("--downloads-dir", metavar="DIR", help="the producer's DL_DIR (default: bitbake's)")
    p.add_argument("--stamps-dir", metavar="DIR", action="append", help="the producer's STAMPS_DIR "
                   "(default: bitbake's; may be given more than once)")
    p.add_argument("--buildstats-dir", metavar="DIR", action="append", help="the producer's BUILDSTATS_BASE, "
                   "whose task times become the cache's durations.json (default: bitbake's; may be given more "
                   "than once)")
    p.add_argument("--hashserv-db", metavar="FILE", help="the producer's hash equivalence database (default: "
                   "bitbake's auto server's, BB_HASHSERVE_DB_DIR or PERSISTENT_DIR/hashserv.db)")
    add_database(p)
    add_s3(p)

    p = sub.add_parser("serve", help="serve the cache in the foreground", formatter_class=formatter,
                       description="Serve CACHE_DIR until Ctrl-C or SIGTERM: the http mirror, a read-only "
                       "bitbake-hashserv on TCP (anonymous users may only read; the users of producer tokens "
                       "may report; an admin user, whose credentials are generated on first start into "
                       "CACHE_DIR/server/admin.json, mode 0600, may write), a write endpoint on the unix socket "
                       "CACHE_DIR/server/hashserv.sock (only this user can reach it), and, while the cache has "
                       "a producer token (see token), an upload endpoint under /upload/v1/ on the http port "
                       "for publish --to, and a dashboard at / (what the cache gave the builds that report to it "
                       "with EQUIVCACHE_REPORT_TO, its size, its publishes; JSON under /api/v1/). Logs go to "
                       "stderr and "
                       "CACHE_DIR/server/serve.log. Refuses (status 2) a socket a live server holds or a "
                       "port in use.",
                       epilog="example: %s serve --bind 0.0.0.0 --public-host cache.example.com /srv/yocto-cache"
                       % PROG)
    p.set_defaults(func=cmd_serve)
    p.add_argument("cache_dir", metavar="CACHE_DIR", help="the cache directory (created if absent), or s3://BUCKET/PREFIX (see "
                   "--state-dir)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for every interface)")
    p.add_argument("--http-port", type=port, default=DEFAULT_HTTP_PORT,
                   help="http mirror port (default: %(default)s)")
    p.add_argument("--hashserv-port", type=port, default=DEFAULT_HASHSERV_PORT,
                   help="read endpoint port (default: %(default)s)")
    p.add_argument("--public-host", metavar="HOST", help="host name consumers use, written into the "
                   "descriptor (default: the --bind address, or this machine's name if that is a wildcard)")
    p.add_argument("--max-upload-size", type=size, default=DEFAULT_MAX_UPLOAD, metavar="SIZE",
                   help="the largest file a producer may upload (default: 8G)")
    p.add_argument("--no-reports", action="store_true", help="refuse the build reports of EQUIVCACHE_REPORT_TO "
                   "(the dashboard shows publishes, gc and the cache only)")
    p.add_argument("--history-rows", type=positive_int, metavar="N", help="keep at most N build reports (and N "
                   "publishes, N gc runs) for the dashboard (default: %d; remembered)" % MAX_ROWS)
    p.add_argument("--history-days", type=positive_int, metavar="DAYS", help="forget reports, publishes and gc "
                   "runs older than DAYS (default: %d; remembered)" % MAX_DAYS)
    add_database(p)
    add_s3(p)

    p = sub.add_parser("token", help="add, list or revoke producer tokens", formatter_class=formatter,
                       usage="%s token add [--role producer|reader] NAME CACHE_DIR\n"
                       "       %s token list CACHE_DIR\n       %s token revoke NAME CACHE_DIR" % ((PROG,) * 3),
                       description="Producer tokens let remote builds publish (publish --to): each names one "
                       "producer, whose secret is both its upload credential (HTTP Basic, checked by the upload "
                       "endpoint) and the token of a bitbake-hashserv user of the same name with @read @report "
                       "(a reader's: @read only, and no upload). The cache keeps only the secret's SHA-256, in "
                       "CACHE_DIR/server/tokens.json (mode 0600); `add` prints NAME:SECRET once, on standard "
                       "output: keep it in a file only the producer can read. The upload endpoint is on while "
                       "a producer token is; revocation counts at once, in a running server too.",
                       epilog="examples:\n  %(p)s token add ci-agent-1 /srv/yocto-cache > ci-agent-1.token\n"
                       "  %(p)s token list /srv/yocto-cache\n  %(p)s token revoke ci-agent-1 /srv/yocto-cache"
                       % {"p": PROG})
    p.set_defaults(func=cmd_token)
    p.add_argument("action", choices=("add", "list", "revoke"))
    p.add_argument("names", nargs="+", metavar="[NAME] CACHE_DIR", help="the token's name (add, revoke), then "
                   "the cache directory")
    p.add_argument("--role", choices=("producer", "reader"), default="producer",
                   help="(add) producer: upload and report equivalences; reader: read the hash server only "
                   "(default: %(default)s)")
    add_database(p)

    p = sub.add_parser("gc", help="keep the cache within a bound", formatter_class=formatter,
                       description="Remove the least recently used sstate objects (each with its .siginfo, .sig "
                       "and signature data) until the cache is within --max-size, and those unused for "
                       "--older-than days. Used means published, or downloaded from the mirror (serve records "
                       "it; for nginx see the README). index.json and sstate-index/ are rewritten without them "
                       "before a file goes; a download under way completes. Equivalences stay while an object "
                       "under their unihash is there and --grace-days after, then go through hashserv's "
                       "gc-mark/gc-sweep (SQLite and PostgreSQL alike; never clean-unused). Safe while serve "
                       "runs, against a publish (they take turns) and if killed at any moment. The bound is "
                       "remembered: later runs (the systemd timer of `config --systemd`) need no option.",
                       epilog="examples:\n  %(p)s gc --max-size 500G --dry-run /srv/yocto-cache\n"
                       "  %(p)s gc --max-size 500G --older-than 60 /srv/yocto-cache\n"
                       "  %(p)s gc /srv/yocto-cache          (the remembered bound)" % {"p": PROG})
    p.set_defaults(func=cmd_gc)
    p.add_argument("cache_dir", metavar="CACHE_DIR")
    p.add_argument("--max-size", type=size, metavar="SIZE", help="evict the least recently used until sstate-cache/ "
                   "and siginfo/ hold at most SIZE (500G, 1.5T, 800M; powers of 1024)")
    p.add_argument("--older-than", type=days, metavar="DAYS", help="evict what was not used for DAYS days")
    p.add_argument("--grace-days", type=days, metavar="DAYS", help="keep an evicted object's equivalences this "
                   "long, so that it comes back under the same name when rebuilt (default: %d)" % DEFAULT_GRACE_DAYS)
    p.add_argument("--keep-publishes", type=int, metavar="N", help="never evict what the last N publishes brought "
                   "or found present (default: %d; 0: no protection)" % DEFAULT_KEEP_PUBLISHES)
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would go and how much it frees; "
                   "change nothing")
    add_database(p)
    add_s3(p)

    p = sub.add_parser("check", help="check the cache's consistency",
                       description="Every entry of index.json and sstate-index/ has its file, and every sstate "
                       "object's unihash has its equivalence in the database. Exit status 0 if so, 1 otherwise "
                       "(one line per fault).")
    p.set_defaults(func=cmd_check)
    p.add_argument("cache_dir", metavar="CACHE_DIR", help="the cache directory, or s3://BUCKET/PREFIX")
    add_database(p)
    add_s3(p)

    p = sub.add_parser("status", help="say what is up, where, and how big the cache is",
                       description="Exit status 0 if everything is up, 3 if the cache is not being served, "
                       "1 if a part is down.")
    p.set_defaults(func=cmd_status)
    p.add_argument("cache_dir", metavar="CACHE_DIR", help="the cache directory, or s3://BUCKET/PREFIX")
    add_s3(p)

    p = sub.add_parser("config", help="print production configurations", formatter_class=formatter,
                       description="Print a ready nginx site for the mirror (--nginx) or systemd units for "
                       "each part with a daily gc timer (--systemd), with serve's safe defaults.",
                       epilog="example: %s config --nginx --public-host cache.example.com /srv/yocto-cache" % PROG)
    p.set_defaults(func=cmd_config)
    p.add_argument("cache_dir", metavar="CACHE_DIR")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--nginx", action="store_true", help="an nginx site serving the mirror")
    what.add_argument("--systemd", action="store_true", help="systemd units for the hashserv endpoints, "
                      "one for the whole server, and a daily timer for gc")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDRESS", help="address to listen on (default: every one)")
    p.add_argument("--http-port", type=port, default=DEFAULT_HTTP_PORT, help="mirror port")
    p.add_argument("--hashserv-port", type=port, default=DEFAULT_HASHSERV_PORT, help="read endpoint port")
    p.add_argument("--public-host", default="_", metavar="HOST", help="(nginx) server_name")
    p.add_argument("--serve-port", "--upload-port", dest="upload_port", type=port, metavar="PORT",
                   help="(nginx) proxy the upload endpoint (/upload/v1/) and the dashboard (/, /plots/, /api/v1/) "
                   "to equivcache-server serve's http port on 127.0.0.1 (serve --bind 127.0.0.1 --http-port PORT)")
    p.add_argument("--max-upload-size", type=size, default=DEFAULT_MAX_UPLOAD, metavar="SIZE",
                   help="(nginx) the largest upload body nginx passes on (default: 8G; as serve's)")
    p.add_argument("--tls-cert", metavar="FILE", help="(nginx) serve https with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="(nginx) the certificate's private key")
    p.add_argument("--user", default="equivcache", help="(systemd) the user the services run as")
    return parser


def size(text):
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def days(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of days" % text)
    if value < 0:
        raise argparse.ArgumentTypeError("%s days: not a duration" % text)
    return value


def add_s3(p):
    p.add_argument("--state-dir", metavar="DIR", help="(s3:// caches) where the cache's private part lives: "
                   "its SQLite database, server.json, the publish lock, gc's ledger (default: "
                   "$XDG_STATE_HOME/equivcache/s3/BUCKET/PREFIX); one machine publishes to a bucket")
    p.add_argument("--s3-endpoint", metavar="URL", help="(s3:// caches) the S3 endpoint of a bucket not at "
                   "AWS, e.g. https://rgw.example.com (default: $AWS_ENDPOINT_URL); credentials come from the "
                   "environment or the AWS config files (AWS_PROFILE), never from the command line")


def add_database(p):
    p.add_argument("--database", metavar="URL", help="the cache's hash equivalence database: SQLite by default "
                   "(CACHE_DIR/hashserv.db), or PostgreSQL through hashserv's SQLAlchemy backend, e.g. "
                   "postgresql+asyncpg://user@dbhost/hashserv (python3-sqlalchemy and python3-asyncpg). "
                   "Remembered in CACHE_DIR/server/server.json; a cache keeps one database")
    p.add_argument("--db-password-file", metavar="FILE", help="a file holding the database password "
                   "(kept out of the command line and of server.json)")


def setup_logging(args, layout=None):
    level = logging.DEBUG if args.verbose else logging.INFO
    root = logging.getLogger("equivcache")
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if layout is not None:
        log = logging.FileHandler(layout.log)
        log.setFormatter(fmt)
        root.addHandler(log)


def db_password(args):
    if not getattr(args, "db_password_file", None):
        return None
    try:
        with open(args.db_password_file) as f:
            return f.read().strip()
    except OSError as e:
        raise UsageError("--db-password-file %s: %s" % (args.db_password_file, e.strerror))


def cmd_config(args):
    root = os.path.abspath(args.cache_dir)
    if args.nginx:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        sys.stdout.write(prodconfig.nginx(root, args.public_host, args.http_port, args.bind, args.upload_port,
                                          args.max_upload_size, args.tls_cert and os.path.abspath(args.tls_cert),
                                          args.tls_key and os.path.abspath(args.tls_key)))
    else:
        bitbake = find_bitbake(args.bitbake)
        database = saved_database(Layout(root))
        sys.stdout.write(prodconfig.systemd(root, bitbake, sys.executable, args.user, args.bind,
                                            args.hashserv_port, database))
        sys.stdout.write("\n" + prodconfig.systemd_all(root, SCRIPT, sys.executable, args.user, args.bind,
                                                       args.http_port, args.hashserv_port))
        sys.stdout.write("\n" + prodconfig.systemd_gc(root, SCRIPT, sys.executable, args.user, bitbake))
    return 0


def bucket_cache(args):
    """The S3Cache of an s3:// CACHE_DIR (--state-dir, --s3-endpoint); a bad URL is a usage error."""
    try:
        return S3Cache(args.cache_dir, args.state_dir, args.s3_endpoint)
    except ValueError as e:
        raise UsageError(str(e))


def cmd_status(args):
    if is_s3(args.cache_dir):
        cache = bucket_cache(args)
    elif not os.path.isdir(args.cache_dir):
        raise UsageError("cache directory %s does not exist" % args.cache_dir)
    else:
        cache = Cache(args.cache_dir)
    try:
        bitbake = find_bitbake(args.bitbake)
    except UsageError:
        bitbake = None
    return status(cache, bitbake)


def writable_cache(args):
    """(bitbake, database password, cache) for the subcommands that write the cache."""
    if is_s3(args.cache_dir):
        if not hasattr(args, "state_dir"):
            raise UsageError("%s: this command takes a cache directory only" % args.cache_dir)
        return find_bitbake(args.bitbake), db_password(args), bucket_cache(args)
    return find_bitbake(args.bitbake), db_password(args), check_cache_dir(args.cache_dir, create=True)


def cmd_publish(args):
    if args.to:
        if args.cache_dir:
            raise UsageError("give CACHE_DIR or --to URL, not both")
        if not args.token_file:
            raise UsageError("--to %s needs --token-file (equivcache-server token add NAME CACHE_DIR prints one "
                             "on the cache's machine)" % args.to)
        if args.database or args.db_password_file:
            raise UsageError("--database is the cache's, on its machine: not with --to")
        setup_logging(args)
        return publish_remote(find_bitbake(args.bitbake), os.path.abspath(args.builddir), args.to,
                              args.token_file, args.sstate_dir, args.downloads_dir, args.hashserv_db,
                              args.stamps_dir, args.hashserv, not args.no_equivalences,
                              buildstats_dirs=args.buildstats_dir)
    if not args.cache_dir:
        raise UsageError("give the cache directory CACHE_DIR, or --to URL of a cache served elsewhere")
    if args.token_file or args.hashserv or args.no_equivalences:
        raise UsageError("--token-file, --hashserv and --no-equivalences go with --to URL")
    bitbake, password, cache = writable_cache(args)
    setup_logging(args)
    return publish(cache, bitbake, os.path.abspath(args.builddir), args.sstate_dir, args.downloads_dir,
                   args.hashserv_db, args.database, password, stamps_dirs=args.stamps_dir,
                   buildstats_dirs=args.buildstats_dir)


def cmd_token(args):
    if args.action == "list":
        if len(args.names) != 1:
            raise UsageError("token list CACHE_DIR")
        return token_command.list_tokens(Layout(args.names[0]))
    if len(args.names) != 2:
        raise UsageError("token %s NAME CACHE_DIR" % args.action)
    name, args.cache_dir = args.names
    bitbake, password, cache = existing_cache(args)
    if args.action == "add":
        return token_command.add(cache, bitbake, name, args.role, args.database, password)
    return token_command.revoke(cache, bitbake, name, args.database, password)


def existing_cache(args):
    """(bitbake, database password, cache) for the subcommands on an existing cache."""
    if not is_s3(args.cache_dir) and not os.path.isdir(os.path.join(args.cache_dir, "sstate-cache")):
        raise UsageError("%s is not a cache directory (no sstate-cache/; publish a build into it first)"
                         % args.cache_dir)
    return writable_cache(args)


def cmd_gc(args):
    bitbake, password, cache = existing_cache(args)
    if args.keep_publishes is not None and args.keep_publishes < 0:
        raise UsageError("--keep-publishes %d: not a count" % args.keep_publishes)
    return gc(cache, bitbake, args.max_size, args.older_than, args.grace_days, args.keep_publishes,
              args.dry_run, args.database, password)


def cmd_check(args):
    bitbake, password, cache = existing_cache(args)
    return check(cache, bitbake, args.database, password)


def cmd_serve(args):
    bitbake, password, cache = writable_cache(args)
    setup_logging(args, cache.layout)
    if args.history_rows is not None or args.history_days is not None:
        config = saved_config(cache.layout)
        bounds = config.setdefault("history", {})
        if args.history_rows is not None:
            bounds["max_rows"] = args.history_rows
        if args.history_days is not None:
            bounds["max_days"] = args.history_days
        save_config(cache.layout, config)
    return serve(cache, bitbake, args.bind, args.http_port, args.hashserv_port, args.public_host,
                 args.database, password, args.verbose, args.max_upload_size, not args.no_reports)


def main(argv=None):
    args = make_parser().parse_args(argv)
    return run(PROG, args.func, args)
