# SPDX-License-Identifier: MIT
#
# bitbake's auto hash equivalence server (BB_HASHSERVE = "auto"), as the
# class and publish need to know it: where its database is (as
# cooker.handlePRServ computes it, BB_HASHSERVE_DB_DIR on bitbake 2.18), and
# what a bitbake server started it with (rule stale-hash-server): noted
# beside the build, keyed by the bitbake server's process.

import json
import os

from equivcache import files
from equivcache.capabilities import database_dir_variable


def auto_database(d):
    """The database bitbake's auto hash equivalence server uses, "" if BB_HASHSERVE is not "auto"."""
    return auto_database_path(d) if d.getVar("BB_HASHSERVE") == "auto" else ""


def auto_database_path(d):
    """Where bitbake's auto hash equivalence server keeps its database, as
    cooker.handlePRServ computes it (it has replaced BB_HASHSERVE by its
    socket's address once the server runs); "" if nothing says."""
    directory = (database_dir_variable() and d.getVar("BB_HASHSERVE_DB_DIR")) or d.getVar("PERSISTENT_DIR") \
        or d.getVar("CACHE")
    return os.path.join(directory, "hashserv.db") if directory else ""


# bitbake starts the auto server once per bitbake server process, with the
# configuration of the first parse that has BB_HASHSERVE = "auto", and keeps
# it while that process lives (cooker.handlePRServ). The class notes those
# settings beside the server's socket, keyed by the process.
def auto_server_record(d):
    return os.path.join(d.getVar("TOPDIR"), "equivcache-hashserve.json")


def auto_server_started(d):
    """What this bitbake server's auto server was started with, if it was."""
    if d.getVar("BB_HASHSERVE") != "auto" or not d.getVar("TOPDIR"):
        return None
    try:
        with open(auto_server_record(d)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("pid") == os.getpid() else None


def note_auto_server(d, settings):
    """Note what the auto server will be started with, the first time this bitbake server parses with it."""
    if settings.hashserve != "auto" or settings.auto_server or not settings.topdir:
        return
    try:
        files.write_atomic(auto_server_record(d), json.dumps(
            {"pid": os.getpid(), "upstream": settings.upstream, "database": settings.database}))
    except OSError:
        pass
