# SPDX-License-Identifier: MIT
#
# equivcache-server status: what is up, where, and how big the cache is.

import sys

from equivcache import names, probe
from equivcache.formatting import human
from equivcache.server.database import database_usage, is_sqlite, show_database, sqlite_usage
from equivcache.server.endpoints import READ_PERMS, loopback_for, socket_alive
from equivcache.server.layout import load_json, running_state, saved_database
from equivcache.server.publish import download_files


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
    objects = sizes = 0
    for _, size, parsed in names.sstate_files(layout.sstate):
        if parsed[3] == "object":
            objects += 1
            sizes += size
    lines.append("  %-16s %d objects, %s" % ("sstate-cache", objects, human(sizes)))
    files = total = 0
    for _, size in download_files(layout.downloads):
        files += 1
        total += size
    lines.append("  %-16s %d files, %s" % ("downloads", files, human(total)))
    doc = load_json(layout.descriptor)
    lines.append("  %-16s %s" % ("descriptor", ("generated " + doc.get("generated", "?")) if doc else "none yet"))
    out.write("\n".join(lines) + "\n")
    return code
