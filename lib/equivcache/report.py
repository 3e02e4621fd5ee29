# SPDX-License-Identifier: MIT
#
# The build report: what the sstate cache and the hash equivalence server gave
# one build, and why each setscene task that missed did. Pure Python: no bb
# import, so plain pytest exercises it.
#
# The cooker fills one BuildRecord per build: EquivCacheHash with the
# unihash queries (HashServerUse) and the sstate check (its checkhashes
# hook, which sstate_checkhashes calls with what it found locally and on the
# mirrors), equivcache.bbclass with the runqueue's events (SetsceneUse, and
# the real tasks in BuildRecord). At BuildCompleted the class
# writes document() as JSON under ${LOG_DIR}/equivcache/ and prints
# summary_line(). The document's schema is schemas/report-v3.json (version 2
# added "saved": what the restored tasks took their producers, from the
# cache's durations.json; version 3 the tasks that did not run because
# restored objects covered them, bitbake's runQueueTaskSkipped "covered",
# each credited with its producer's time, and the build's wall time).

import os
import time

from equivcache.formatting import duration, human, utc_iso

FORMAT = "equivcache-report"
VERSION = 3
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas", "report-v%d.json" % VERSION)

# Why a setscene task missed, most specific first.
SERVER_UNREACHABLE = "server-unreachable"   # its unihash was guessed: the server was away
DOWNLOAD_FAILED = "download-failed"         # the mirror had it, the setscene task failed
OTHER_UNIHASH = "other-unihash"             # the mirror has the recipe's task, under another unihash
NOT_ON_MIRROR = "not-on-mirror"             # the mirror has no object of the recipe's task
UNKNOWN = "unknown"                         # not on the mirror under this unihash; no index to tell more
CLASSES = (SERVER_UNREACHABLE, DOWNLOAD_FAILED, OTHER_UNIHASH, NOT_ON_MIRROR, UNKNOWN)

CLASS_TEXT = {
    SERVER_UNREACHABLE: "unihash guessed while the hash server was away",
    DOWNLOAD_FAILED: "download failed",
    OTHER_UNIHASH: "on the mirror under another unihash",
    NOT_ON_MIRROR: "not on the mirror at all",
    UNKNOWN: "not on the mirror under this unihash",
}

# The record of the build the cooker runs now (None in task workers and
# before the first build): set at BuildStarted by the class.
_current = None


def start(name="", targets=(), server=""):
    global _current
    _current = BuildRecord(name, targets, server=server)
    return _current


def current():
    return _current


def finish():
    """The record of the build that ends, no longer current."""
    global _current
    record, _current = _current, None
    return record


# How many other unihashes of a missed task the report lists.
MAX_OTHER_UNIHASHES = 3


class HashServerUse:
    """What the hash equivalence server gave a build: EquivCacheHash's queries."""

    def __init__(self, server=""):
        self.server = server
        self.queries = 0
        self.equivalent = 0
        self.errors = 0
        self.calls = 0
        self.latency_total = 0.0
        self.latency_max = 0.0
        self.guessed = set()

    def unihash_call(self, asked, answers, taskhashes, seconds):
        """A query of the server for the tids in asked, answered."""
        self.calls += 1
        self.queries += len(asked)
        self.latency_total += seconds
        self.latency_max = max(self.latency_max, seconds)
        self.equivalent += sum(1 for tid in asked if answers.get(tid) and answers[tid] != taskhashes[tid])

    def unihash_error(self):
        self.errors += 1

    def unihashes_guessed(self, tids):
        self.guessed.update(tids)

    def hashserv_document(self):
        return {
            "server": self.server,
            "queries": self.queries,
            "equivalent": self.equivalent,
            "errors": self.errors,
            "guessed": len(self.guessed),
            "calls": self.calls,
            "latency_ms": {
                "mean": round(1000 * self.latency_total / self.calls, 3) if self.calls else 0.0,
                "max": round(1000 * self.latency_max, 3),
                "total": round(1000 * self.latency_total, 3),
            },
        }


class SetsceneUse:
    """What the sstate cache gave a build: the sstate check (EquivCacheHash's
    checkhashes hook) and the setscene tasks (the runqueue's events)."""

    def __init__(self):
        # The first sstate check: {tid: {"recipe", "task", "unihash", "taskhash", "where", "path"}}
        self.checked = None
        self.first = {"wanted": 0, "local": 0, "mirror": 0, "missed": 0}
        self.rechecked = 0
        self.found_on_recheck = 0
        self.scene_started = {}      # tid: when
        self.scene_completed = {}    # tid: when
        self.scene_failed = set()
        self.downloads = []          # (tid, bytes, seconds)
        self.covered = {}            # tid: {"recipe", "task", "unihash", "taskhash"} of the tasks skipped as covered

    def sstate_checked(self, entries):
        """One call of sstate_checkhashes: {tid: entry}, entry["where"] being
        "local", "mirror" or "missed". The first call of a build is the one
        whose numbers bitbake prints as its Sstate summary; later calls
        recheck tasks whose unihash changed while the build ran."""
        if self.checked is None:
            self.checked = dict(entries)
            where = [e["where"] for e in entries.values()]
            self.first = {"wanted": len(where), "local": where.count("local"),
                          "mirror": where.count("mirror"), "missed": where.count("missed")}
            return
        self.rechecked += len(entries)
        for tid, entry in entries.items():
            before = self.checked.get(tid)
            if entry["where"] != "missed" and (before is None or before["where"] == "missed"):
                self.found_on_recheck += 1
            self.checked[tid] = entry

    def scene_task_started(self, tid, when=None):
        self.scene_started[tid] = time.time() if when is None else when

    def scene_task_completed(self, tid, when=None):
        """A setscene task succeeded. For an object from the mirror, the
        bytes now in SSTATE_DIR and the time from the task's start to the
        arrival of the last file (its ctime, which no fetcher sets; of the
        link itself when a file:// mirror's fetcher linked it)."""
        self.scene_completed[tid] = time.time() if when is None else when
        entry = (self.checked or {}).get(tid)
        if not entry or entry["where"] != "mirror" or not entry.get("path"):
            return
        size, arrived = 0, None
        for path in (entry["path"], entry["path"] + ".siginfo"):
            try:
                size += os.stat(path).st_size
                ctime = os.lstat(path).st_ctime
            except OSError:
                continue
            arrived = ctime if arrived is None else max(arrived, ctime)
        if arrived is None:
            return
        start = self.scene_started.get(tid, arrived)
        self.downloads.append((tid, size, max(0.0, arrived - start)))

    def scene_task_failed(self, tid):
        self.scene_failed.add(tid)

    def task_covered(self, tid, recipe, task, unihash, taskhash):
        """A real task bitbake skipped because the objects restored covered
        it (runQueueTaskSkipped, reason "covered"; noexec tasks left out by
        the caller: they cost nothing)."""
        self.covered[tid] = {"recipe": recipe, "task": task, "unihash": unihash, "taskhash": taskhash}

    def misses(self, index=None, guessed=()):
        """[(tid, entry, class, other unihashes)] of every setscene task the
        cache did not give: missed by the check, or found on the mirror and
        failed. index: catalog.unihashes_by_task() of the mirror's index.json,
        or None; guessed: the tids whose unihash was guessed."""
        result = []
        for tid, entry in sorted((self.checked or {}).items()):
            if entry["where"] == "missed":
                cls, others = classify(entry, tid in guessed, index)
            elif entry["where"] == "mirror" and tid in self.scene_failed:
                cls, others = DOWNLOAD_FAILED, []
            else:
                continue
            result.append((tid, entry, cls, others))
        return result

    def restored(self):
        """[(tid, entry, setscene seconds)] of the setscene tasks that gave this build their object."""
        result = []
        for tid, done in sorted(self.scene_completed.items()):
            entry = (self.checked or {}).get(tid)
            if entry and entry["where"] in ("local", "mirror"):
                result.append((tid, entry, max(0.0, done - self.scene_started.get(tid, done))))
        return result

    def saved(self, durations=None, source=None, wall=None, setscene=None):
        """The "saved" part of the document: each task the cache spared this
        build, once: restored (its setscene task gave its object) or covered
        (skipped because restored objects made it unnecessary), with what its
        producer took for it (durations: {(task, unihash): seconds} of the
        cache's durations.json, None if there is none) and what restoring it
        took here; the sums, unknown durations counted, never guessed, and
        the ratio of the time saved to this build's wall time. setscene:
        {(recipe, task): seconds} of the setscene tasks in this build's
        buildstats, preferred to the time between their events."""
        tasks = []
        restored = self.restored()
        for tid, e, spent in restored:
            spent = (setscene or {}).get((e["recipe"], e["task"]), spent)
            tasks.append(self._spared(e, "restored", e["where"], durations, round(spent, 3)))
        done = {tid for tid, _, _ in restored}
        for tid, e in sorted(self.covered.items()):
            if tid not in done:
                tasks.append(self._spared(e, "covered", None, durations, 0.0))
        timed = [t for t in tasks if t["producer_seconds"] is not None]
        producer = sum(t["producer_seconds"] for t in timed)
        spent = sum(t["setscene_seconds"] for t in timed)
        net = round(producer - spent, 3)
        return {
            "durations": source,
            "skipped": len(tasks),
            "restored": len(restored),
            "covered": len(tasks) - len(restored),
            "timed": len(timed),
            "unknown": len(tasks) - len(timed),
            "producer_seconds": round(producer, 3),
            "setscene_seconds": round(spent, 3),
            "net_seconds": net,
            "wall_seconds": None if wall is None else round(wall, 3),
            "ratio": round(net / wall, 4) if wall else None,
            "tasks": tasks,
        }

    @staticmethod
    def _spared(e, how, where, durations, spent):
        return {"recipe": e["recipe"], "task": e["task"], "unihash": e["unihash"], "how": how, "from": where,
                "equivalent": e["unihash"] != e["taskhash"],
                "producer_seconds": (durations or {}).get((e["task"], e["unihash"])), "setscene_seconds": spent}

    def setscene_document(self):
        return dict(self.first, rechecked=self.rechecked, found_on_recheck=self.found_on_recheck,
                    completed=len(self.scene_completed), failed=len(self.scene_failed))

    def downloads_document(self):
        return {
            "objects": len(self.downloads),
            "bytes": sum(b for _, b, _ in self.downloads),
            "seconds": round(sum(s for _, _, s in self.downloads), 3),
        }


class BuildRecord(SetsceneUse, HashServerUse):
    """What one build got from the cache, filled in the cooker as it happens:
    the sstate side (SetsceneUse), the hash server side (HashServerUse) and
    the real tasks run."""

    def __init__(self, name="", targets=(), started=None, server=""):
        SetsceneUse.__init__(self)
        HashServerUse.__init__(self, server)
        self.name = name
        self.targets = list(targets)
        self.started = time.time() if started is None else started
        self.tasks_run = 0
        self.tasks_noexec = 0
        self.tasks_failed = 0

    def task_started(self, noexec):
        if noexec:
            self.tasks_noexec += 1
        else:
            self.tasks_run += 1

    def task_failed(self):
        self.tasks_failed += 1

    def misses(self, index=None):
        return SetsceneUse.misses(self, index, self.guessed)

    def document(self, index=None, index_source=None, succeeded=True, finished=None, durations=None,
                 durations_source=None, setscene=None):
        finished = time.time() if finished is None else finished
        misses = self.misses(index)
        counts = {cls: 0 for cls in CLASSES}
        for _, _, cls, _ in misses:
            counts[cls] += 1
        return {
            "format": FORMAT,
            "version": VERSION,
            "build": {
                "name": self.name,
                "targets": self.targets,
                "started": utc_iso(self.started),
                "finished": utc_iso(finished),
                "wall_seconds": round(max(0.0, finished - self.started), 3),
                "succeeded": bool(succeeded),
            },
            "setscene": self.setscene_document(),
            "downloads": self.downloads_document(),
            "hashserv": self.hashserv_document(),
            "tasks": {"run": self.tasks_run, "noexec": self.tasks_noexec, "failed": self.tasks_failed},
            "misses": {
                "index": index_source,
                "counts": counts,
                "tasks": [
                    {"recipe": e["recipe"], "task": e["task"], "unihash": e["unihash"], "taskhash": e["taskhash"],
                     "class": cls, "mirror_unihashes": others[:MAX_OTHER_UNIHASHES]}
                    for _, e, cls, others in misses
                ],
            },
            "saved": self.saved(durations, durations_source, max(0.0, finished - self.started), setscene),
        }


def classify(entry, guessed, index):
    """(class, other unihashes on the mirror) of a task the sstate check missed."""
    if guessed:
        return SERVER_UNREACHABLE, []
    if index is None:
        return UNKNOWN, []
    others = sorted(index.get((entry["recipe"], entry["task"]), set()) - {entry["unihash"]})
    return (OTHER_UNIHASH, others) if others else (NOT_ON_MIRROR, [])


def summary_line(doc, path=None):
    """The one line printed at the end of a build."""
    s, dl, hs, t = doc["setscene"], doc["downloads"], doc["hashserv"], doc["tasks"]
    parts = ["setscene %d wanted: %d local, %d mirror" % (s["wanted"], s["local"], s["mirror"])]
    if dl["objects"]:
        parts[-1] += " (%d downloaded, %s in %.1f s)" % (dl["objects"], human(dl["bytes"]), dl["seconds"])
    counts = doc["misses"]["counts"]
    why = ", ".join("%d %s" % (counts[c], CLASS_TEXT[c]) for c in CLASSES if counts[c])
    parts[-1] += ", %d missed%s" % (s["missed"], " (%s)" % why if why else "")
    if s["found_on_recheck"]:
        parts[-1] += ", %d found later by equivalence" % s["found_on_recheck"]
    server = "hash server: %d queries, %d equivalent" % (hs["queries"], hs["equivalent"])
    if hs["calls"]:
        server += ", %.1f ms per call" % hs["latency_ms"]["mean"]
    if hs["errors"]:
        server += ", %d errors (%d unihashes guessed)" % (hs["errors"], hs["guessed"])
    parts.append(server)
    parts.append("%d tasks run" % t["run"] + (", %d failed" % t["failed"] if t["failed"] else ""))
    saved = saved_text(doc["saved"])
    if saved:
        parts.insert(1, saved)
    line = "equivcache: " + "; ".join(parts)
    if path:
        line += "; report %s" % path
    return line


def saved_text(saved):
    """What the cache saved a build, in words ("" if it spared no task)."""
    skipped = saved.get("skipped", saved["restored"])
    if not skipped:
        return ""
    tasks = "%d tasks skipped (%d restored, %d covered)" % (skipped, saved["restored"], saved.get("covered", 0))
    if not saved["timed"]:
        return "%s, time saved unknown (%s)" % (
            tasks, "no producer timed them" if saved["durations"] else "the cache has no durations")
    took = "their producers took %s, restoring took %s here" % (
        duration(saved["producer_seconds"]), duration(saved["setscene_seconds"]))
    if saved["net_seconds"] > 0:
        text = "the cache saved %s of build time" % duration(saved["net_seconds"])
        if saved.get("wall_seconds"):
            text += " (%.1fx this build's %s)" % (saved["net_seconds"] / saved["wall_seconds"],
                                                 duration(saved["wall_seconds"]))
    else:
        text = "the cache saved no build time"
    text += ": %s; %s" % (tasks, took)
    if saved["unknown"]:
        text += "; %d of unknown duration" % saved["unknown"]
    return text
