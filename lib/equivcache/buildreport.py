# SPDX-License-Identifier: MIT
#
# The build report of equivcache.bbclass, its build-event handler in the
# cooker: the runqueue's events feed the BuildRecord (lib/equivcache/report.py)
# that EquivCacheHash opened, and at BuildCompleted the report is classified
# against the cache's index, written to LOG_DIR/equivcache/ and summed up in
# one line, with what the tasks the cache spared (restored, or covered by
# what was restored) took their producers (the cache's durations.json).
# With EQUIVCACHE_REPORT_TO the report also goes to a cache server, in the
# background (lib/equivcache/reportsend.py). Only with
# EquivCacheHash, whose checkhashes hook sees the sstate check.

import glob
import json
import os
import time

import bb
import bb.event
import bb.runqueue

from equivcache import catalog, durations, files, probe, report, reportsend
from equivcache.cachedescriptor import descriptor_locations

INDEX_LIMIT = 256 << 20
DURATIONS_LIMIT = 256 << 20


def find_index(d, timeout, need_index=True, need_durations=True):
    """What a report needs of the cache, in one request: (catalog.unihashes_by_task()
    of its index.json or None, its URL, durations.seconds_by_task() of the
    durations the index carries or None). None for all without an index."""
    doc, url, errors = catalog.read_first(descriptor_locations(d, d.getVar("EQUIVCACHE_SERVER") or "", catalog.NAME),
                                        timeout, INDEX_LIMIT)
    for error in errors:
        bb.debug(1, "equivcache: no index at %s" % error)
    if doc is None:
        return None, None, None
    timed = doc.get("durations")
    timed = durations.seconds_by_task(timed) if need_durations and isinstance(timed, dict) and \
        timed.get("format") == durations.FORMAT else None
    return (catalog.unihashes_by_task(doc) if need_index else None), url, timed


def find_durations(d, timeout):
    """(durations.seconds_by_task() of the cache's durations.json, its URL), or (None, None)."""
    for url in descriptor_locations(d, d.getVar("EQUIVCACHE_SERVER") or "", durations.NAME):
        try:
            doc = json.loads(probe.fetch(url, timeout, limit=DURATIONS_LIMIT))
        except (OSError, ValueError) as e:
            bb.debug(1, "equivcache: no durations at %s: %s" % (url, e))
            continue
        if isinstance(doc, dict) and doc.get("format") == durations.FORMAT:
            return durations.seconds_by_task(doc), url
    return None, None


def on_build_event(e, d):
    """The runqueue and build events handler of equivcache.bbclass (cooker only)."""
    if isinstance(e, bb.event.BuildStarted):
        if getattr(bb.parse.siggen, "name", "") == "EquivCacheHash":
            report.start(d.getVar("BUILDNAME") or "", e.getPkgs(), getattr(bb.parse.siggen, "server", ""))
        return
    record = report.current()
    if record is None:
        return
    if isinstance(e, bb.event.BuildCompleted):
        report.finish()
        if record.checked is not None:
            write_report(d, record, succeeded=not e._failures)
    elif isinstance(e, bb.runqueue.sceneQueueTaskStarted):
        record.scene_task_started(e.taskid)
    elif isinstance(e, bb.runqueue.sceneQueueTaskCompleted):
        record.scene_task_completed(e.taskid)
    elif isinstance(e, bb.runqueue.sceneQueueTaskFailed):
        record.scene_task_failed(e.taskid)
    elif isinstance(e, bb.runqueue.runQueueTaskStarted):
        record.task_started(getattr(e, "noexec", False))
    elif isinstance(e, bb.runqueue.runQueueTaskFailed):
        record.task_failed()
    elif isinstance(e, bb.runqueue.runQueueTaskSkipped) and e.reason == "covered":
        note_covered(record, e)


def note_covered(record, e):
    """A real task skipped because restored objects covered it: its recipe,
    and the unihash its producer's signature data would name (its taskhash
    where it has no setscene task), from the signature generator's caches;
    a noexec task (it costs nothing) is left out."""
    siggen = bb.parse.siggen
    try:
        mc, _, task, mcfn = bb.runqueue.split_tid_mcfn(e.taskid)
        cache = siggen.datacaches[mc]
        if cache.task_deps[mcfn].get("noexec", {}).get(task):
            return
        recipe = cache.pkg_fn[mcfn]
    except (AttributeError, KeyError, TypeError, ValueError):
        return
    record.task_covered(e.taskid, recipe, task, siggen.get_cached_unihash(e.taskid) or e.taskhash, e.taskhash)


def setscene_times(d, record):
    """{(recipe, task): seconds} of this build's setscene tasks in its own
    buildstats (USER_CLASSES += "buildstats"), timed as the producer's tasks
    are: the task itself, not its wait in the queue. {} without buildstats."""
    base = d.getVar("BUILDSTATS_BASE")
    directory = os.path.join(base, record.name) if base and record.name else ""
    if not os.path.isdir(directory):
        return {}
    recipes = sorted({e["recipe"] for _, e, _ in record.restored()}, key=len, reverse=True)
    found = {}
    for pf in os.listdir(directory):
        recipe = next((r for r in recipes if pf.startswith(r + "-")), None)
        for path in glob.glob(os.path.join(directory, pf, "do_*_setscene")) if recipe else ():
            times = durations.read_task_stats(path)
            if times:
                found[(recipe, os.path.basename(path)[:-len("_setscene")])] = times[1] - times[0]
    return found


def write_report(d, record, succeeded):
    index, source = None, None
    # Checked by on_config_parsed, which stops the build on a bad value.
    timeout = float(d.getVar("EQUIVCACHE_PROBE_TIMEOUT") or 2)
    need_index, need_durations = bool(record.misses()), bool(record.restored() or record.covered)
    timed, timed_source = None, None
    if need_index or need_durations:
        index, source, timed = find_index(d, timeout, need_index, need_durations)
        # The durations index.json carries are its durations.json's, named so in the report.
        timed_source = source.rsplit("/", 1)[0] + "/" + durations.NAME if timed is not None else None
        source = source if need_index else None
        if need_durations and timed is None:   # a cache published before its index carried them
            timed, timed_source = find_durations(d, timeout)
    doc = record.document(index, source, succeeded, durations=timed, durations_source=timed_source,
                          setscene=setscene_times(d, record))
    directory = os.path.join(d.getVar("LOG_DIR"), "equivcache")
    name = "%s.json" % (record.name or time.strftime("%Y%m%d%H%M%S"))
    try:
        bb.utils.mkdirhier(directory)
        files.write_json(os.path.join(directory, name), doc)
        latest = os.path.join(directory, "latest.json")
        if os.path.lexists(latest):
            os.unlink(latest)
        os.symlink(name, latest)
    except OSError as e:
        bb.warn("equivcache: cannot write the build report in %s: %s" % (directory, e))
        bb.plain(report.summary_line(doc))
        return
    topdir = d.getVar("TOPDIR") or ""
    path = os.path.join(directory, name)
    bb.plain(report.summary_line(doc, os.path.relpath(path, topdir) if path.startswith(topdir + "/") else path))
    url = (d.getVar("EQUIVCACHE_REPORT_TO") or "").strip()
    if url:
        reportsend.send_in_background(url, path, d.getVar("EQUIVCACHE_REPORT_NAME") or "",
                                      os.path.join(directory, reportsend.LOG),
                                      d.getVar("EQUIVCACHE_REPORT_TOKEN_FILE") or "")
