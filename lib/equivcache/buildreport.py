# SPDX-License-Identifier: MIT
#
# The build report of equivcache.bbclass, its build-event handler in the
# cooker: the runqueue's events feed the BuildRecord (lib/equivcache/report.py)
# that EquivCacheHash opened, and at BuildCompleted the report is classified
# against the cache's index, written to LOG_DIR/equivcache/ and summed up in
# one line, with what the restored tasks took their producers (the cache's
# durations.json). With EQUIVCACHE_REPORT_TO the report also goes to a cache
# server, in the background (lib/equivcache/reportsend.py). Only with
# EquivCacheHash, whose checkhashes hook sees the sstate check.

import json
import os
import time

import bb
import bb.event
import bb.runqueue

from equivcache import catalog, durations, files, probe, report, reportsend
from equivcache.configcheck import descriptor_locations

INDEX_LIMIT = 256 << 20
DURATIONS_LIMIT = 256 << 20


def find_index(d, timeout):
    """(catalog.unihashes_by_task() of the cache's index.json, its URL), or (None, None)."""
    doc, url, errors = catalog.read_first(descriptor_locations(d, d.getVar("EQUIVCACHE_SERVER") or "", catalog.NAME),
                                        timeout, INDEX_LIMIT)
    for error in errors:
        bb.debug(1, "equivcache: no index at %s" % error)
    return (catalog.unihashes_by_task(doc), url) if doc is not None else (None, None)


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


def write_report(d, record, succeeded):
    index, source = None, None
    # Checked by on_config_parsed, which stops the build on a bad value.
    timeout = float(d.getVar("EQUIVCACHE_PROBE_TIMEOUT") or 2)
    if record.misses():
        index, source = find_index(d, timeout)
    timed, timed_source = find_durations(d, timeout) if record.restored() else (None, None)
    doc = record.document(index, source, succeeded, durations=timed, durations_source=timed_source)
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
