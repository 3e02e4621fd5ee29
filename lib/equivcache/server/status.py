# SPDX-License-Identifier: MIT
#
# equivcache-server status: what is up, where, and how big the cache is.

import sys

from equivcache import probe
from equivcache.formatting import human
from equivcache.server.database import database_usage, is_sqlite, show_database, sqlite_usage
from equivcache.server.endpoints import READ_PERMS, loopback_for, socket_alive
from equivcache.server.gc import scan
from equivcache.server.layout import load_json, running_state, saved_config, saved_database
from equivcache.server.producer import download_files


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


def status(layout, bitbake=None, out=sys.stdout):
    """Print what is up, where, and how big the cache is. 0: all up;
    3: not running (as systemctl status); 1: running but a part is down."""
    state = running_state(layout)
    database = saved_database(layout)
    writer_up = state is not None and socket_alive(layout.socket)
    lines = []
    code = 0
    if state is None:
        lines.append("equivcache-server: %s is not being served" % layout.root)
        code = 3
    else:
        lines.append("equivcache-server: serving %s (pid %d, since %s)" % (layout.root, state["pid"], state["started"]))
        checks = [
            ("http mirror", state["http"], probe.http(state["http"] + "/equivcache.json", 3) is None),
            ("read endpoint", state["hashserv"] + " (anonymous %s)" % READ_PERMS,
             probe.server(("tcp", loopback_for(state["bind"]), state["hashserv_port"]), 3) is None),
            ("write endpoint", state["socket"], writer_up),
        ]
        for name, where, up in checks:
            lines.append("  %-16s %s  %s" % (name, where, "up" if up else "DOWN"))
            if not up:
                code = 1
        lines.append("  %-16s %s" % ("consumers use", ", ".join(state.get("public_hashserv", []))))
    usage = None
    if bitbake and writer_up:
        try:
            usage = database_usage(bitbake, "unix://" + layout.socket, layout.private)
        except Exception as e:   # a status must say what it can
            lines.append("  database usage unavailable: %s" % e)
    elif is_sqlite(database):
        usage = sqlite_usage(database)
    line = "  %-16s %s" % ("database", show_database(database))
    if usage:
        line += "  (%s)" % ", ".join("%s %d" % (k, v) for k, v in sorted(usage.items()))
    lines.append(line)
    objects, alone = scan(layout)
    held = sum(g.size for g in list(objects.values()) + alone)
    lines.append("  %-16s %d objects, %s with their signature files" % (
        "sstate-cache", sum(1 for g in objects.values() if g.unihash), human(held)))
    lines.append("  %-16s %s" % ("gc bound", gc_bound(saved_config(layout).get("gc"), held)))
    files = total = 0
    for _, size in download_files(layout.downloads):
        files += 1
        total += size
    lines.append("  %-16s %d files, %s" % ("downloads", files, human(total)))
    doc = load_json(layout.descriptor)
    lines.append("  %-16s %s" % ("descriptor", ("generated " + doc.get("generated", "?")) if doc else "none yet"))
    out.write("\n".join(lines) + "\n")
    return code
