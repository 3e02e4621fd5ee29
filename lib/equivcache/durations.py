# SPDX-License-Identifier: MIT
#
# durations.json: how long each task a cache's objects spare took on the
# producer that ran it, so that a consumer's build report can say what the
# cache saved it in time (schema: schemas/durations-v2.json). Publish reads
# the producer's buildstats and names each task run by the unihash of the
# signature data that bitbake wrote as the task ended: every task, not only
# those with an sstate object, since restoring a recipe's objects spares a
# consumer its fetch, configure, compile and install too. The cache keeps
# the entries of the tasks it holds an object of, and of the other tasks of
# the recipes it holds an object of: the newest PER_TASK of each recipe and
# task (their unihashes change with each version and configuration).
# Version 1 documents (objects' tasks only) are still read. Pure Python: no
# bb import.
#
#   buildstats (buildstats.bbclass, USER_CLASSES):
#     BUILDSTATS_BASE/BUILDNAME/PF/do_TASK     "Started: T0", "Status: PASSED", "Ended: T1"
#   signature data (bitbake's dump_sigtask at make_stamp, just after the task ended):
#     STAMPS_DIR/MULTIMACH_TARGET_SYS/PN/PV.do_TASK.sigdata.UNIHASH
#
# A buildstats entry PN-[PE_]PV-PR/do_TASK is the run whose sigdata of PN
# and PV was written within MATCH_WINDOW seconds of its end; a task run
# again later (or a sigdata rewritten by `bitbake -S`) matches no older
# entry. A run without such a sigdata has no duration: never guessed.

import os
import re

from equivcache import names
from equivcache.formatting import utc_iso

NAME = "durations.json"
FORMAT = "equivcache-durations"
VERSION = 2
READS = (1, 2)
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas", "durations-v%d.json" % VERSION)
MATCH_WINDOW = 10.0
PER_TASK = 8

_FIELD = re.compile(r"^(Started|Ended|Status):\s*(\S+)")


def read_task_stats(path):
    """(started, ended) of a buildstats task file of a task that passed, else None."""
    fields = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _FIELD.match(line)
                if m:
                    fields[m.group(1)] = m.group(2)
    except OSError:
        return None
    if fields.get("Status") != "PASSED":
        return None
    try:
        started, ended = float(fields["Started"]), float(fields["Ended"])
    except (KeyError, ValueError):
        return None
    return (started, ended) if ended >= started else None


def task_runs(buildstats_dirs):
    """(PF, task, started, ended) of every task run (setscene tasks left
    out) that passed, in the buildstats of every build under the dirs."""
    for base in buildstats_dirs:
        try:
            builds = sorted(os.listdir(base))
        except OSError:
            continue
        for build in builds:
            build_dir = os.path.join(base, build)
            if not os.path.isdir(build_dir):
                continue
            for pf in sorted(os.listdir(build_dir)):
                pf_dir = os.path.join(build_dir, pf)
                if not os.path.isdir(pf_dir):
                    continue
                for task in sorted(os.listdir(pf_dir)):
                    if not task.startswith("do_") or task.endswith("_setscene"):
                        continue
                    times = read_task_stats(os.path.join(pf_dir, task))
                    if times:
                        yield pf, task, times[0], times[1]


def signature_times(stamps_dirs):
    """{(PN, task): [(PV, unihash, mtime)]} of the signature data in STAMPS_DIRs."""
    found = {}
    for stamps in stamps_dirs:
        for rel, st, (pn, task, unihash) in names.named_stats(stamps, names.parse_sigdata_name):
            pv = os.path.basename(rel).split("." + task + ".sigdata.", 1)[0]
            found.setdefault((pn, task), []).append((pv, unihash, st.st_mtime))
    return found


def _version_of(pf, pn):
    """[PE_]PV-PR of PF if PF is PN's, else None."""
    return pf[len(pn) + 1:] if pf.startswith(pn + "-") else None


def measure(buildstats_dirs, stamps_dirs):
    """{(recipe, task, unihash): seconds} of the task runs whose signature data names them."""
    signatures = signature_times(stamps_dirs)
    recipes = sorted({pn for pn, _ in signatures}, key=len, reverse=True)
    found = {}
    for pf, task, started, ended in task_runs(buildstats_dirs):
        best = None
        for pn in recipes:
            version = _version_of(pf, pn)
            if version is None:
                continue
            for pv, unihash, mtime in signatures.get((pn, task), ()):
                if not re.match(r"^(\d+_)?%s-" % re.escape(pv), version):
                    continue
                gap = abs(mtime - ended)
                if gap <= MATCH_WINDOW and (best is None or gap < best[0]):
                    best = (gap, pn, unihash)
        if best:
            found[(best[1], task, best[2])] = round(ended - started, 2)
    return found


def document(entries, generated=None):
    """The durations.json document of {(recipe, task, unihash): {"seconds", "producer", "measured"}}."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "generated": generated or utc_iso(),
        "tasks": [dict(recipe=r, task=t, unihash=u, **entries[(r, t, u)]) for r, t, u in sorted(entries)],
    }


def entries_of(doc):
    """{(recipe, task, unihash): {"seconds", "producer", "measured"}} of a durations document (version 1 or 2)."""
    found = {}
    if isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("version") in READS:
        for t in doc.get("tasks", []):
            found[(t["recipe"], t["task"], t["unihash"])] = {k: t[k] for k in ("seconds", "producer", "measured")}
    return found


def seconds_by_task(doc):
    """{(task, unihash): seconds} of a durations document, as a build report looks them up."""
    return {(t, u): e["seconds"] for (_, t, u), e in entries_of(doc).items()}


def merged(current, new, present):
    """current with the entries of new it lacks (the measure of the run
    whose object the cache kept stays): those of the (recipe, task,
    unihash) in present (what the cache holds objects of), and of the
    other tasks of the recipes in present, the newest PER_TASK of each."""
    both = dict(new)
    both.update(current)
    kept = {k: v for k, v in both.items() if k in present}
    recipes = {r for r, _, _ in present}
    others = {}
    for k, v in both.items():
        if k not in present and k[0] in recipes:
            others.setdefault(k[:2], []).append((v["measured"], k))
    for entries in others.values():
        for _, k in sorted(entries, reverse=True)[:PER_TASK]:
            kept[k] = both[k]
    return kept
