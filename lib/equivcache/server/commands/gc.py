# SPDX-License-Identifier: MIT
#
# equivcache-server gc: keep a cache within a bound (size, age) with its
# mirror, indexes and hash equivalence database consistent (check.py checks
# what it keeps). No bb import (hashserv's client comes from bitbake).
#
# What a task hash is made of decides the order: it includes the unihashes
# of the tasks it depends on, and the server keeps the first unihash it gave
# a task hash. An equivalence kept while its object is gone costs that task
# once (it rebuilds under the same unihash); an object kept while its
# equivalence is gone costs every task that depends on it. So objects go
# first, and their equivalences only a grace period later.
#
# Phases, each safe to kill at any moment (SIGKILL included):
#   plan      walk sstate-cache/ and siginfo/; nothing written
#   ledger    server/gc-ledger.db (store/ledger.py): when an object under each unihash was last
#             seen (or published); committed before anything is removed
#   index     index.json and a new sstate-index generation without what goes:
#             from then on no index names it
#   delete    the files; a download already under way gets the whole object
#             (an unlinked file stays readable), a new one a 404
#   mark      hashserv's own gc-mark from what is kept and the ledger, then
#   sweep     gc-sweep (one transaction) once the ledger covers a grace period
# A publish and a gc take turns (server/publish.lock).
#
# Used means published (publish sets a file's mtime and atime), downloaded
# (the mirror sets atime; under nginx the kernel's relatime does, daily), or
# restored by a build that sent its report to the cache (the ledger's
# "used": the only use a bucket knows of, since it keeps no access time).
# What goes together and in which order: store/groups.py.

import contextlib
import os
import signal
import sys
import time

from equivcache.cli import Progress, UsageError, find_bitbake
from equivcache.formatting import human, utc_iso
from equivcache.server import options
from equivcache.server.hashequiv.database import mark_and_sweep
from equivcache.server.store.groups import DAY, plan
from equivcache.server.store.history import note_history, open_history
from equivcache.server.store.layout import save_config, saved_config, server_config
from equivcache.server.store.ledger import last_used, open_ledger, protect_since

NAME = "gc"
HELP = "keep the cache within a bound"
DEFAULT_GRACE_DAYS = 30
DEFAULT_KEEP_PUBLISHES = 1
# Test hook: "PHASE:N" makes gc kill itself with SIGKILL at step N of PHASE.
KILL_HOOK = "EQUIVCACHE_GC_TEST_KILL"


def setup_parser(p):
    p.description = (
        "Remove the least recently used sstate objects (each with its .siginfo, .sig "
        "and signature data) until the cache is within --max-size, and those unused for "
        "--older-than days. Used means published, downloaded from the mirror (serve records "
        "it; for nginx see the documentation), or restored by a build that reported to the cache "
        "(EQUIVCACHE_REPORT_TO: on a bucket, the only use known). index.json and sstate-index/ are "
        "rewritten without them before a file goes; a download under way completes. Equivalences stay while an object "
        "under their unihash is there and --grace-days after, then go through hashserv's "
        "gc-mark/gc-sweep (SQLite and PostgreSQL alike; never clean-unused). Safe while serve "
        "runs, against a publish (they take turns) and if killed at any moment. The bound is "
        "remembered: later runs (the systemd timer of `config --systemd`) need no option.")
    p.epilog = ("examples:\n  %(p)s gc --max-size 500G --dry-run /srv/yocto-cache\n"
                "  %(p)s gc --max-size 500G --older-than 60 /srv/yocto-cache\n"
                "  %(p)s gc /srv/yocto-cache          (the remembered bound)" % {"p": options.PROG})
    options.add_cache(p)
    p.add_argument("--max-size", type=options.size, metavar="SIZE", help="evict the least recently used until "
                   "sstate-cache/ and siginfo/ hold at most SIZE (500G, 1.5T, 800M; powers of 1024)")
    p.add_argument("--older-than", type=options.days, metavar="DAYS", help="evict what was not used for DAYS days")
    p.add_argument("--grace-days", type=options.days, metavar="DAYS", help="keep an evicted object's equivalences "
                   "this long, so that it comes back under the same name when rebuilt (default: %d)"
                   % DEFAULT_GRACE_DAYS)
    p.add_argument("--keep-publishes", type=int, metavar="N",
                   help="never evict what the last N publishes brought or found present (default: %d; 0: no "
                   "protection)" % DEFAULT_KEEP_PUBLISHES)
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would go and how much it frees; "
                   "change nothing")
    options.add_database(p)
    options.add_s3(p)


def run(args):
    if args.keep_publishes is not None and args.keep_publishes < 0:
        raise UsageError("--keep-publishes %d: not a count" % args.keep_publishes)
    cache = options.cache_of(args, create=True, require_objects=True)
    return gc(cache, find_bitbake(args.bitbake), args.max_size, args.older_than, args.grace_days, args.keep_publishes,
              args.dry_run, args.database, options.db_password(args))


def checkpoint(phase, step):
    """The test hook (KILL_HOOK): SIGKILL at step `step` of `phase`."""
    wanted = os.environ.get(KILL_HOOK)
    if wanted and wanted == "%s:%d" % (phase, step):
        os.kill(os.getpid(), signal.SIGKILL)


def remove_groups(cache, evicted):
    """Remove the evicted groups' files, each object before its signature files."""
    progress = Progress("removing", len(evicted))
    for step, group in enumerate(evicted, 1):
        checkpoint("delete", step)
        for rel in sorted(group.files, key=lambda f: (not f.endswith(".tar.zst"), f)):
            cache.storage.remove(rel)
        progress.step()
    progress.close()


def bound_settings(layout, max_size, older_than, grace_days, keep_publishes, save):
    """The bound: the options given, else those a previous gc saved in server.json."""
    saved = saved_config(layout).get("gc", {})
    if max_size is None and older_than is None:
        max_size, older_than = saved.get("max_size"), saved.get("older_than")
        if max_size is None and older_than is None:
            raise UsageError("no bound: pass --max-size or --older-than (they are remembered for the next gc)")
    settings = {
        "max_size": max_size, "older_than": older_than,
        "grace_days": grace_days if grace_days is not None else saved.get("grace_days", DEFAULT_GRACE_DAYS),
        "keep_publishes": keep_publishes if keep_publishes is not None
        else saved.get("keep_publishes", DEFAULT_KEEP_PUBLISHES),
    }
    if save:
        config = server_config(layout)
        config["gc"] = settings
        save_config(layout, config)
    return settings


def say_plan(out, settings, dry_run, gone, present, freed, total, evicted, protected):
    bound = "bound %s" % human(settings["max_size"]) if settings["max_size"] is not None else "no size bound"
    if settings["older_than"] is not None:
        bound += ", unused for %g days" % settings["older_than"]
    keep_publishes = settings["keep_publishes"]
    out.write("gc: %s%d of %d objects (%s of %s) and %d signature files go, %s; %s\n" % (
        "would remove: " if dry_run else "", len(gone), present, human(freed), human(total),
        len(evicted) - len(gone), bound, "%d protected (the last %s)" % (
            protected, "publish" if keep_publishes == 1 else "%d publishes" % keep_publishes)
        if keep_publishes else "no protection of the last publishes"))
    if settings["max_size"] is not None and total - freed > settings["max_size"]:
        out.write("gc: still %s over the bound: the rest is protected\n" % human(total - freed - settings["max_size"]))
    if dry_run:
        for group in sorted(gone, key=lambda g: g.used):
            out.write("  %s  %s  last used %s\n" % (human(group.size), group.files[0], utc_iso(group.used)))


def gc(cache, bitbake, max_size=None, older_than=None, grace_days=None, keep_publishes=None, dry_run=False,
       database=None, db_password=None, out=sys.stdout, now=None):
    """Bring the cache within its bound; return the exit status."""
    layout = cache.layout
    settings = bound_settings(layout, max_size, older_than, grace_days, keep_publishes, save=not dry_run)
    now = time.time() if now is None else now
    with contextlib.nullcontext() if dry_run else cache.lock(out):
        objects, alone = cache.scan()
        groups = list(objects.values()) + alone
        used = last_used(layout)
        for group in groups:   # restored by a build that reported it: used then
            if group.unihash in used:
                group.used = max(group.used, used[group.unihash])
        evicted, kept, protected = plan(groups, now, settings["max_size"], settings["older_than"],
                                        protect_since(layout, settings["keep_publishes"]))
        total, freed = sum(g.size for g in groups), sum(g.size for g in evicted)
        gone = [g for g in evicted if g.unihash]
        present = sum(1 for g in objects.values() if g.unihash)
        say_plan(out, settings, dry_run, gone, present, freed, total, evicted, protected)
        if dry_run:
            return 0
        checkpoint("plan", 1)

        ledger = open_ledger(layout, now)
        try:
            ledger.saw({g.unihash for g in objects.values() if g.unihash}, now)
            checkpoint("ledger", 1)
            gone_sstate = {f[len("sstate-cache/"):] for g in evicted for f in g.files if f.startswith("sstate-cache/")}
            gone_sig = {f[len("siginfo/"):] for g in evicted for f in g.files if f.startswith("siginfo/")}
            _, sstate_paths, _, _, _, head = cache.write_indexes(gone_sstate, gone_sig,
                                                                 after_index=lambda: checkpoint("index", 1))
            remove_groups(cache, evicted)
            cache.write_descriptor(sstate_paths=[p for p in sstate_paths if p not in gone_sstate], head=head)
            keep = {g.unihash for g in kept if g.unihash} | ledger.since(now - settings["grace_days"] * DAY)
            started, where = ledger.started, ledger.where
        finally:
            ledger.close()

        if started > now - settings["grace_days"] * DAY:
            out.write("gc: equivalences: none removed yet: the ledger (%s) was started %s, less than the grace "
                      "period (%g days) ago\n" % (where, utc_iso(started),
                                                 settings["grace_days"]))
        else:
            with cache.endpoint(bitbake, database, db_password) as (hashserv, address, _):
                marked, swept = mark_and_sweep(hashserv, address, keep, checkpoint)
            out.write("gc: equivalences: %d rows kept (%d unihashes: objects present, or seen within %g days), "
                      "%d removed\n" % (marked, len(keep), settings["grace_days"], swept))
        out.write("gc: %d objects, %s kept\n" % (present - len(gone), human(total - freed)))
        note_history(out, lambda: open_history(layout, server_config(layout, database), db_password).note_gc(
            len(gone), freed, total - freed, settings["max_size"] or 0))
    return 0
