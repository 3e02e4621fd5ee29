# SPDX-License-Identifier: MIT
#
# equivcache-server status: what is up, where, and how big the cache is.

import json
import sys

from equivcache import descriptor as desc, probe
from equivcache.cli import UsageError, find_bitbake
from equivcache.server import options
from equivcache.formatting import duration, human
from equivcache.server.store.history import open_history
from equivcache.server.hashequiv.database import database_usage, is_sqlite, show_database, sqlite_usage
from equivcache.server.hashequiv.processes import READ_PERMS, loopback_for, socket_alive
from equivcache.server.store.layout import running_state, saved_config, saved_database

NAME = "status"
HELP = "say what is up, where, and how big the cache is"


def setup_parser(p):
    p.description = "Exit status 0 if everything is up, 3 if the cache is not being served, 1 if a part is down."
    options.add_cache(p)
    options.add_s3(p)


def run(args):
    cache = options.cache_of(args)
    try:
        bitbake = find_bitbake(args.bitbake)
    except UsageError:
        bitbake = None
    return status(cache, bitbake)


def gc_bound(settings, held):
    """The gc bound equivcache-server gc remembered, against what sstate-cache/ and siginfo/ hold."""
    if not settings:
        return "none (equivcache-server gc --max-size SIZE or --older-than DAYS sets one)"
    parts = []
    if settings.get("max_size") is not None:
        bound = settings["max_size"]
        parts.append("%s of %s (%d%%)" % (human(held), human(bound), held * 100 // bound if bound else 100))
    if settings.get("older_than") is not None:
        parts.append("evicts what is unused for %g days" % settings["older_than"])
    return "; ".join(parts) + "; equivalences kept %g days after their objects" % settings["grace_days"]


def dashboard_summary(layout, state):
    """The dashboard's numbers: from the running server's API, else from a
    SQLite history read here (None if neither can be had)."""
    if state is not None:
        try:
            return json.loads(probe.fetch(state["http"] + "/api/v1/summary", 10))
        except (OSError, ValueError):
            return None
    history = open_history(layout, saved_config(layout))
    if not history.sqlite or not history.exists():
        return None
    from equivcache.server.http.dashboard import summarize   # here: the dashboard's modules, for status only
    return summarize(history.rows("equivcache_reports"), history.rows("equivcache_publishes"),
                     history.rows("equivcache_gc"), {}, {})


def headline(layout, state):
    """The dashboard's headline numbers, as status lines."""
    s = dashboard_summary(layout, state)
    if s is None:
        return ["  %-16s %s" % ("dashboard", "unavailable (serve the cache: its dashboard is at /)")]
    b = s["builds"]
    lines = []
    if b["reports"]:
        lines.append("  %-16s %d (setscene hit rate %.1f%%; %d tasks skipped: %d restored, %d covered; saved %s%s%s)"
                     % ("builds reported", b["reports"], 100 * (b["hit_rate"] or 0), b["skipped"], b["restored"],
                        b["covered"], duration(max(0.0, b["net_seconds"])),
                        ", %.1fx the builds' own time" % max(0.0, b["ratio"]) if b["ratio"] is not None else "",
                        ", %d tasks of unknown duration" % b["unknown"] if b["unknown"] else ""))
        if s["per_day"]:
            day = s["per_day"][-1]
            lines.append("  %-16s %s: %d builds, %d tasks skipped, saved %s" % (
                "last day", day["day"], day["builds"], day["skipped"], duration(max(0.0, day["net_seconds"]))))
    else:
        lines.append("  %-16s none yet (EQUIVCACHE_REPORT_TO in the builds' configuration)" % "builds reported")
    if s["publishes"]:
        last = max(s["publishes"], key=lambda p: p["last"] or "")
        lines.append("  %-16s %d by %d producers; last %s by %s" % (
            "publishes", sum(p["publishes"] for p in s["publishes"]), len(s["publishes"]), last["last"],
            last["producer"]))
    if s["gc"]:
        lines.append("  %-16s last run %s evicted %d objects (%s)" % (
            "gc", s["gc"][0]["at"], s["gc"][0]["evicted"], human(s["gc"][0]["evicted_bytes"])))
    if s["misses"]:
        top = s["misses"][0]
        lines.append("  %-16s %s:%s (in %d builds)" % ("misses most", top["recipe"], top["task"], top["builds"]))
    return lines


def status(cache, bitbake=None, out=sys.stdout):
    """Print what is up, where, and how big the cache is. 0: all up;
    3: not running (as systemctl status); 1: running but a part is down."""
    layout = cache.layout
    state = running_state(layout)
    database = saved_database(layout)
    writer_up = state is not None and socket_alive(layout.socket)
    lines = []
    code = 0
    if state is None:
        lines.append("equivcache-server: %s is not being served" % cache.root)
        code = 3
    else:
        lines.append("equivcache-server: serving %s (pid %d, since %s)" % (cache.root, state["pid"], state["started"]))
        checks = [
            ("http mirror", state["http"], probe.http(state["http"] + "/equivcache.json", 3) is None),
            ("read endpoint", state["hashserv"] + " (anonymous %s)" % READ_PERMS,
             probe.server(("tcp", loopback_for(state["bind"]), state["hashserv_port"]), 3) is None),
            ("write endpoint", state["socket"], writer_up),
        ]
        if state.get("websocket"):
            address = state["websocket"][len("ws://"):].rsplit(":", 1)
            checks.append(("websocket", state["websocket"] + " (for a TLS proxy's /ws)",
                           probe.server(("ws", address[0], int(address[1]), False), 3) is None))
        for name, where, up in checks:
            lines.append("  %-16s %s  %s" % (name, where, "up" if up else "DOWN"))
            if not up:
                code = 1
        lines.append("  %-16s %s" % ("consumers use", ", ".join(state.get("public_hashserv", []))))
    usage = None
    if bitbake and writer_up:
        try:
            usage = database_usage(bitbake, "unix://" + layout.socket)
        except Exception as e:   # a status must say what it can
            lines.append("  database usage unavailable: %s" % e)
    elif is_sqlite(database):
        usage = sqlite_usage(database)
    line = "  %-16s %s" % ("database", show_database(database))
    if usage:
        line += "  (%s)" % ", ".join("%s %d" % (k, v) for k, v in sorted(usage.items()))
    lines.append(line)
    objects, alone = cache.scan()
    held = sum(g.size for g in list(objects.values()) + alone)
    lines.append("  %-16s %d objects, %s with their signature files" % (
        "sstate-cache", sum(1 for g in objects.values() if g.unihash), human(held)))
    lines.append("  %-16s %s" % ("gc bound", gc_bound(saved_config(layout).get("gc"), held)))
    downloads = cache.listing("downloads")
    lines.append("  %-16s %d files, %s" % ("downloads", len(downloads), human(sum(downloads.values()))))
    doc = cache.read_json(desc.NAME)
    lines.append("  %-16s %s" % ("descriptor", ("generated " + doc.get("generated", "?")) if doc else "none yet"))
    if saved_config(layout).get("require_signatures"):
        lines.append("  %-16s required; trusted keys: %s" % ("signatures", ", ".join(
            "%s %s" % (k["producer"], k["fingerprint"]) for k in ((doc or {}).get("signatures") or {}).get("keys", []))
            or "none yet (token add NAME --gpg-key FILE)"))
    lines.extend(headline(layout, state))
    out.write("\n".join(lines) + "\n")
    return code
