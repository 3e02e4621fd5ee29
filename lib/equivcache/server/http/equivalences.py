# SPDX-License-Identifier: MIT
#
# POST /upload/v1/equivalences: a producer's hash equivalences, merged by
# the cache itself through its write endpoint, the way publish merges a
# local producer's (database.merge_database): one request instead of a round
# trip per entry to the hash server (minutes for a build host a continent
# away), and the token never goes to the hash server. What a producer
# token's hashserv user (@read @report) may report, nothing more: each entry
# is checked here, and only reports are made.
#
#   {"outhashes": [{"method", "taskhash", "outhash"(, "PN", "PV", "PR",
#     "task", "outhash_siginfo")}, ...], "unihashes": [[method, taskhash,
#     unihash], ...]} -> {"outhashes", "unihashes", "remapped", "superseded": [...]}
#     (uploadapi.equivalences_document() of a producer's database)
#
# Pure Python: no bb import (the merge is serve's, with its hashserv module).

import json

from equivcache.server.store.storage import Refused
from equivcache.uploadapi import EQUIVALENCE_EXTRA as EXTRA

# What an entry's fields may be: a method's name, hashes, and the task's
# recipe, version and signature data (which bitbake's reports carry).
_SHORT = 256
_SIGINFO = 1 << 20


def _text(value, limit):
    return isinstance(value, str) and 0 < len(value) <= limit


def parse(doc):
    """(outhash rows, {(method, taskhash): unihash}) of a request's document, or Refused(400)."""
    rows, pairs = doc.get("outhashes", []), doc.get("unihashes", [])
    if not isinstance(rows, list) or not isinstance(pairs, list):
        raise Refused(400, "equivalences: {\"outhashes\": [...], \"unihashes\": [...]} expected")
    outhashes = []
    for row in rows:
        if not (isinstance(row, dict) and all(_text(row.get(k), _SHORT) for k in ("method", "taskhash", "outhash"))
                and set(row) <= {"method", "taskhash", "outhash"} | set(EXTRA)
                and all(row[k] is None or _text(row[k], _SIGINFO if k == "outhash_siginfo" else _SHORT)
                        for k in EXTRA if k in row)):
            raise Refused(400, "equivalences: an output hash entry needs method, taskhash and outhash (strings), and "
                          "may have %s: %.200s" % (", ".join(EXTRA), json.dumps(row)))
        outhashes.append(row)
    unihashes = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 3 and all(_text(p, _SHORT) for p in pair)):
            raise Refused(400, "equivalences: a unihash entry is [method, taskhash, unihash]: %.200s"
                          % json.dumps(pair))
        unihashes[(pair[0], pair[1])] = pair[2]
    return outhashes, unihashes


def answer(counts):
    """The merge's counts as the answer carries them."""
    return dict(counts, superseded=sorted(counts["superseded"]))
