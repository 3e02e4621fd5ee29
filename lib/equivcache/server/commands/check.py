# SPDX-License-Identifier: MIT
#
# equivcache-server check: what gc and publish keep true. Every entry of
# index.json and sstate-index/ has its file, and every sstate object's
# unihash has its equivalence in the cache's database. No bb import.

import contextlib
import sys

from equivcache import catalog, names, pathkeys
from equivcache.cli import Failure, find_bitbake
from equivcache.server import options
from equivcache.server.hashequiv.database import unihashes_named

NAME = "check"
HELP = "check the cache's consistency"
MAX_LINES = 50


def setup_parser(p):
    p.description = ("Every entry of index.json and sstate-index/ has its file, and every sstate object's unihash "
                     "has its equivalence in the database. Exit status 0 if so, 1 otherwise (one line per fault).")
    options.add_cache(p)
    options.add_database(p)
    options.add_s3(p)


def run(args):
    cache = options.cache_of(args, create=True, require_objects=True)
    return check(cache, find_bitbake(args.bitbake), args.database, options.db_password(args))


def index_faults(cache, sstate, siginfo):
    """The entries of index.json and sstate-index/ whose files are missing."""
    faults = []
    doc = cache.read_json(catalog.NAME) or {}
    for obj in doc.get("objects", []):
        for rel in (obj.get("path"), obj.get("siginfo")):
            if rel and rel not in sstate:
                faults.append("index.json names sstate-cache/%s, which is missing" % rel)
    for sig in doc.get("signatures", []):
        if sig["path"] not in siginfo:
            faults.append("index.json names siginfo/%s, which is missing" % sig["path"])
    head, journal, exists = cache.read_pathkeys()
    if head is not None:
        present = {pathkeys.key_int(p) for p in sstate}
        missing = sum(1 for k in pathkeys.keys_of(journal) if k not in present)
        if missing:
            faults.append("sstate-index/%s lists %d files that sstate-cache/ lacks" % (head["journal"], missing))
    elif exists:
        faults.append("sstate-index/ is unreadable or inconsistent")
    return doc, faults


def check(cache, bitbake, database=None, db_password=None, out=sys.stdout):
    """0 if the cache is consistent, else Failure with a line per fault printed."""
    sstate, siginfo = cache.listing("sstate-cache"), cache.listing("siginfo")
    doc, faults = index_faults(cache, sstate, siginfo)
    unihashes = sorted({parsed[2] for parsed in map(names.parse_sstate_name, sstate)
                        if parsed and parsed[3] == "object"})
    with cache.endpoint(bitbake, database, db_password) as (hashserv, address, _):
        with contextlib.closing(hashserv.create_client(address)) as client:
            absent = [u for u, there in zip(unihashes, unihashes_named(client, unihashes)) if not there]
    for unihash in absent:
        faults.append("an object under unihash %s has no equivalence in the database" % unihash)
    for line in faults[:MAX_LINES]:
        out.write("check: %s\n" % line)
    if len(faults) > MAX_LINES:
        out.write("check: ... and %d more\n" % (len(faults) - MAX_LINES))
    out.write("check: %s: %d index entries, %d objects with their equivalences%s\n" % (
        cache.root, len(doc.get("objects", [])), len(unihashes) - len(absent),
        ", %d faults" % len(faults) if faults else ", consistent"))
    if faults:
        raise Failure("%d faults in %s" % (len(faults), cache.root))
    return 0
