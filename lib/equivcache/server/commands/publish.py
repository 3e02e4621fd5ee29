# SPDX-License-Identifier: MIT
#
# equivcache-server publish: a producer's build into a cache this machine
# writes (producer/publish.py), or uploaded to a cache served elsewhere
# (--to URL: producer/upload.py).

import os

from equivcache.cli import UsageError, find_bitbake
from equivcache.server import options
from equivcache.server.producer.publish import publish
from equivcache.server.producer.upload import publish_remote

NAME = "publish"
HELP = "add a producer build to the cache"


def setup_parser(p):
    p.description = (
        "Add a producer build's sstate objects and downloads to CACHE_DIR (copied "
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
        "from which consumers' build reports say what the cache saved them.")
    p.epilog = ("examples:\n  %(p)s publish --from ~/poky/build /srv/yocto-cache\n"
                "  %(p)s publish --from build --to http://cache.example.com:8080 --token-file ci-1.token"
                % {"p": options.PROG})
    p.add_argument("cache_dir", metavar="CACHE_DIR", nargs="?", help="the cache directory (created if absent), or "
                   "s3://BUCKET/PREFIX (see --state-dir)")
    p.add_argument("--from", dest="builddir", metavar="BUILDDIR", required=True,
                   help="the producer's build directory (TOPDIR)")
    p.add_argument("--to", metavar="URL", help="the http(s) address of a cache served elsewhere (as "
                   "equivcache-client --server takes it), instead of CACHE_DIR")
    p.add_argument("--token-file", metavar="FILE", help="(with --to) the producer token, as `token add` "
                   "printed it (one line NAME:SECRET)")
    p.add_argument("--hashserv", metavar="ADDRESS", help="(with --to) report the equivalences to this hash "
                   "server (HOST:PORT, ws[s]://...) as the token's user, instead of sending them to the cache, "
                   "which merges them (a cache too old to: the first of its descriptor)")
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
    options.add_database(p)
    options.add_s3(p)


def run(args):
    if args.to:
        if args.cache_dir:
            raise UsageError("give CACHE_DIR or --to URL, not both")
        if not args.token_file:
            raise UsageError("--to %s needs --token-file (equivcache-server token add NAME CACHE_DIR prints one "
                             "on the cache's machine)" % args.to)
        if args.database or args.db_password_file:
            raise UsageError("--database is the cache's, on its machine: not with --to")
        options.setup_logging(args)
        return publish_remote(find_bitbake(args.bitbake), os.path.abspath(args.builddir), args.to,
                              args.token_file, args.sstate_dir, args.downloads_dir, args.hashserv_db,
                              args.stamps_dir, args.hashserv, not args.no_equivalences,
                              buildstats_dirs=args.buildstats_dir)
    if not args.cache_dir:
        raise UsageError("give the cache directory CACHE_DIR, or --to URL of a cache served elsewhere")
    if args.token_file or args.hashserv or args.no_equivalences:
        raise UsageError("--token-file, --hashserv and --no-equivalences go with --to URL")
    bitbake, password = find_bitbake(args.bitbake), options.db_password(args)
    cache = options.cache_of(args, create=True)
    options.setup_logging(args)
    return publish(cache, bitbake, os.path.abspath(args.builddir), args.sstate_dir, args.downloads_dir,
                   args.hashserv_db, args.database, password, stamps_dirs=args.stamps_dir,
                   buildstats_dirs=args.buildstats_dir)
