# SPDX-License-Identifier: MIT
#
# What several of equivcache-server's subcommands take: argument types, the
# option groups of a cache's database and of a bucket, opening the cache an
# invocation names, and logging.

import argparse
import logging
import sys

from equivcache.cli import UsageError
from equivcache.formatting import parse_size
from equivcache.server.store import is_s3, open_cache

PROG = "equivcache-server"


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
port_or_off = whole_number("port", 0, 65535)
positive_int = whole_number("count", 1)


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


def add_cache(p, help="the cache directory, or s3://BUCKET/PREFIX"):
    p.add_argument("cache_dir", metavar="CACHE_DIR", help=help)


def add_s3(p):
    p.add_argument("--state-dir", metavar="DIR", help="(s3:// caches) this machine's directory for the cache "
                   "(default: $XDG_STATE_HOME/equivcache/s3/BUCKET/PREFIX): with a PostgreSQL database "
                   "(--database, or $EQUIVCACHE_DATABASE) only this replica's sockets, log and which database; "
                   "otherwise the whole private part (SQLite database, server.json, lock, gc's ledger), and "
                   "one machine serves the bucket")
    p.add_argument("--s3-endpoint", metavar="URL", help="(s3:// caches) the S3 endpoint of a bucket not at "
                   "AWS, e.g. https://rgw.example.com (default: $AWS_ENDPOINT_URL); credentials come from the "
                   "environment or the AWS config files (AWS_PROFILE), never from the command line")


def add_database(p):
    p.add_argument("--database", metavar="URL", help="the cache's hash equivalence database: SQLite by default "
                   "(CACHE_DIR/hashserv.db), or PostgreSQL through hashserv's SQLAlchemy backend, e.g. "
                   "postgresql+asyncpg://user@dbhost/hashserv (python3-sqlalchemy and python3-asyncpg). "
                   "Remembered in CACHE_DIR/server/server.json (a bucket's: in --state-dir, or give "
                   "$EQUIVCACHE_DATABASE); a cache keeps one database. With PostgreSQL the cache's whole state "
                   "is kept there too (tokens, settings, admin credentials, gc's ledger and lock, history): "
                   "several serve replicas share it")
    p.add_argument("--db-password-file", metavar="FILE", help="a file holding the database password "
                   "(kept out of the command line and of server.json)")


def db_password(args):
    if not getattr(args, "db_password_file", None):
        return None
    try:
        with open(args.db_password_file) as f:
            return f.read().strip()
    except OSError as e:
        raise UsageError("--db-password-file %s: %s" % (args.db_password_file, e.strerror))


def cache_of(args, create=False, require_objects=False):
    """The Cache args.cache_dir names (store.open_cache), with --state-dir and --s3-endpoint where the command has them."""
    if is_s3(args.cache_dir) and not hasattr(args, "state_dir"):
        raise UsageError("%s: this command takes a cache directory only" % args.cache_dir)
    return open_cache(args.cache_dir, create, getattr(args, "state_dir", None), getattr(args, "s3_endpoint", None),
                      require_objects, getattr(args, "database", None), db_password(args))


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
