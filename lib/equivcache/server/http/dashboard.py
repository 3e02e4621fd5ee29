# SPDX-License-Identifier: MIT
#
# The cache's dashboard, served by `serve` on its http port beside the
# mirror: what the cache gave the builds that report to it
# (EQUIVCACHE_REPORT_TO), how full it is, who publishes, what misses most.
# One HTML page without JavaScript, plots drawn here (plots.py), and a JSON
# API with the same numbers (schema: schemas/dashboard-v2.json):
#
#   GET  /                       the page
#   GET  /plots/hit-rate.svg     hit rate per build and per day
#   GET  /plots/saved.svg        build time saved per day
#   GET  /api/v1/summary         every number of the page
#   GET  /api/v1/reports?limit=N the newest N reports kept (default 100)
#   POST /api/v1/reports         a build report (reportsend.py): 201 {"id": N}
#
# No bb import.

import html
import json
import logging
import threading
import time
import urllib.parse
from collections import Counter, defaultdict

from equivcache import report as buildreport
from equivcache.reportsend import RESTORED_LIMIT
from equivcache.formatting import duration, human, utc_iso
from equivcache.server.store.storage import Refused
from equivcache.server.store.history import MAX_ROWS

logger = logging.getLogger("equivcache.server")

FORMAT = "equivcache-dashboard"
VERSION = 2
API = "/api/v1/"
REPORT_VERSIONS = (1, 2, buildreport.VERSION)
REPORT_LIMIT = 4 << 20
RECENT = 50
TOP_MISSES = 20
SCAN_SECONDS = 60.0


def _count(doc, *keys):
    value = doc
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise Refused(400, "report: %s missing" % ".".join(keys))
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 and keys[-1] != "net_seconds":
        raise Refused(400, "report: %s must be a number" % ".".join(keys))
    return value


def check_report(doc):
    """A report as reportsend.py sends it, of any version this server reads
    (version 1: no "saved"; version 2: no covered tasks, no wall time);
    Refused if malformed."""
    if not isinstance(doc, dict) or doc.get("format") != buildreport.FORMAT:
        raise Refused(400, "not an equivcache build report (format %s)" % buildreport.FORMAT)
    if doc.get("version") not in REPORT_VERSIONS:
        raise Refused(400, "build report version %r: this server reads versions %s"
                      % (doc.get("version"), ", ".join(map(str, REPORT_VERSIONS))))
    if doc["version"] == 1:
        doc["saved"] = {"durations": None, "restored": 0, "timed": 0, "unknown": 0, "producer_seconds": 0.0,
                        "setscene_seconds": 0.0, "net_seconds": 0.0}
    for keys in (("setscene", "wanted"), ("setscene", "local"), ("setscene", "mirror"), ("setscene", "missed"),
                 ("tasks", "run"), ("saved", "restored"), ("saved", "timed"), ("saved", "unknown"),
                 ("saved", "producer_seconds"), ("saved", "setscene_seconds"), ("saved", "net_seconds")) + (
                     (("saved", "covered"), ("build", "wall_seconds")) if doc["version"] >= 3 else ()):
        _count(doc, *keys)
    build = doc.get("build")
    if not (isinstance(build, dict) and isinstance(build.get("name"), str) and isinstance(build.get("targets"), list)
            and all(isinstance(t, str) for t in build["targets"])):
        raise Refused(400, "report: build.name and build.targets required")
    tasks = doc.get("misses", {}).get("tasks") if isinstance(doc.get("misses"), dict) else None
    if not isinstance(tasks, list) or not all(
            isinstance(t, dict) and all(isinstance(t.get(k), str) for k in ("recipe", "task", "class"))
            for t in tasks):
        raise Refused(400, "report: misses.tasks must list recipe, task and class")
    restored = doc["saved"].get("restored_unihashes", [])
    if not (isinstance(restored, list) and len(restored) <= RESTORED_LIMIT
            and all(isinstance(u, str) and 0 < len(u) <= 128 for u in restored)):
        raise Refused(400, "report: saved.restored_unihashes must list at most %d unihashes" % RESTORED_LIMIT)
    reporter = doc.get("reporter", "")
    if not isinstance(reporter, str) or len(reporter) > 200:
        raise Refused(400, "report: reporter must be a short string")
    return doc


def _rate(hits, wanted):
    return round(hits / wanted, 4) if wanted else None


def _day(at):
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _ratio(net, wall):
    return round(net / wall, 4) if wall else None


def _saved(rows):
    """The time-saved figures of report rows: tasks skipped (restored and covered), time saved, how much
    of it unknown, and its ratio to the wall time of the builds that give one (version 3 reports)."""
    walled = [r for r in rows if r.get("wall_seconds")]
    return {
        "skipped": sum(r["restored"] + (r.get("covered") or 0) for r in rows),
        "restored": sum(r["restored"] for r in rows),
        "covered": sum(r.get("covered") or 0 for r in rows),
        "unknown": sum(r["unknown"] for r in rows),
        "net_seconds": round(sum(r["net_seconds"] for r in rows), 3),
        "wall_seconds": round(sum(r["wall_seconds"] for r in walled), 3),
        "ratio": _ratio(sum(r["net_seconds"] for r in walled), sum(r["wall_seconds"] for r in walled)),
    }


def summarize(reports, publishes, gc_runs, cache_state, hashserv_rows, now=None):
    """The numbers of the dashboard (schemas/dashboard-v2.json) from the
    history's rows, the cache's size and bound, and hashserv's row counts."""
    wanted = sum(r["wanted"] for r in reports)
    hits = sum(r["local_hits"] + r["mirror_hits"] for r in reports)
    days = defaultdict(list)
    for r in reports:
        days[_day(r["at"])].append(r)
    misses = Counter()
    classes = defaultdict(Counter)
    for r in reports:
        for recipe, task, cls in json.loads(r["misses"] or "[]"):
            misses[(recipe, task)] += 1
            classes[(recipe, task)][cls] += 1
    producers = {}
    for p in publishes:
        entry = producers.setdefault(p["producer"], {"producer": p["producer"], "publishes": 0, "files": 0,
                                                     "bytes": 0, "last": None})
        entry["publishes"] += 1
        entry["files"] += p["files"]
        entry["bytes"] += p["bytes"]
        entry["last"] = utc_iso(p["at"])
    return {
        "format": FORMAT,
        "version": VERSION,
        "generated": utc_iso(now),
        "builds": dict({
            "reports": len(reports),
            "wanted": wanted,
            "hits": hits,
            "hit_rate": _rate(hits, wanted),
            "producer_seconds": round(sum(r["producer_seconds"] for r in reports), 3),
            "setscene_seconds": round(sum(r["setscene_seconds"] for r in reports), 3),
        }, **_saved(reports)),
        "per_day": [dict({
            "day": day,
            "builds": len(rs),
            "hit_rate": _rate(sum(r["local_hits"] + r["mirror_hits"] for r in rs), sum(r["wanted"] for r in rs)),
        }, **_saved(rs)) for day, rs in sorted(days.items())],
        "recent": [public_report(r) for r in reports[-RECENT:]][::-1],
        "misses": [{"recipe": recipe, "task": task, "builds": n, "classes": dict(classes[(recipe, task)])}
                   for (recipe, task), n in sorted(misses.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_MISSES]],
        "publishes": sorted(producers.values(), key=lambda p: p["producer"]),
        "gc": [{"at": utc_iso(g["at"]), "evicted": g["evicted"], "evicted_bytes": g["evicted_bytes"],
                "kept_bytes": g["kept_bytes"], "max_size": g["max_size"] or None} for g in gc_runs[-RECENT:]][::-1],
        "cache": cache_state,
        "hashserv": hashserv_rows,
    }


def public_report(row):
    """A kept report, as the API shows it."""
    return {
        "id": row["id"], "received": utc_iso(row["at"]), "reporter": row["reporter"], "build": row["build"],
        "targets": row["targets"].split(), "succeeded": bool(row["succeeded"]), "wanted": row["wanted"],
        "local": row["local_hits"], "mirror": row["mirror_hits"], "missed": row["missed"],
        "hit_rate": _rate(row["local_hits"] + row["mirror_hits"], row["wanted"]), "tasks_run": row["tasks_run"],
        "restored": row["restored"], "timed": row["timed"], "unknown": row["unknown"],
        "producer_seconds": row["producer_seconds"], "setscene_seconds": row["setscene_seconds"],
        "net_seconds": row["net_seconds"], "covered": row.get("covered") or 0,
        "skipped": row["restored"] + (row.get("covered") or 0), "wall_seconds": row.get("wall_seconds"),
        "ratio": _ratio(row["net_seconds"], row.get("wall_seconds")),
        "misses": [{"recipe": m[0], "task": m[1], "class": m[2]} for m in json.loads(row["misses"] or "[]")],
    }


class Dashboard:
    """The dashboard of one cache: history (history.History), cache_state()
    -> {"objects", "bytes", "max_size", "older_than"} and hashserv_rows() ->
    {table: rows}, both asked at most once a minute."""

    def __init__(self, history, cache_state, hashserv_rows, accept_reports=True, note_used=None):
        self.history = history
        self.accept_reports = accept_reports
        self.note_used = note_used   # note_used(unihashes): a report's restored objects count as used (gc)
        self._probes = {"cache": cache_state, "hashserv": hashserv_rows}
        self._cached = {}
        self._lock = threading.Lock()

    def _probe(self, name):
        with self._lock:
            at, value = self._cached.get(name, (0, None))
            if time.monotonic() - at > SCAN_SECONDS or value is None:
                try:
                    value = self._probes[name]()
                except Exception as e:   # a dashboard shows what it can
                    logger.warning("dashboard: %s unavailable: %s", name, e)
                    value = {}
                self._cached[name] = (time.monotonic(), value)
            return value

    def summary(self):
        return summarize(self.history.rows("equivcache_reports", MAX_ROWS),
                         self.history.rows("equivcache_publishes", MAX_ROWS),
                         self.history.rows("equivcache_gc", MAX_ROWS), self._probe("cache"), self._probe("hashserv"))

    def receive(self, body):
        if not self.accept_reports:
            raise Refused(405, "this cache takes no build reports (serve --no-reports)")
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise Refused(400, "report: not JSON: %s" % e)
        number = self.history.add_report(check_report(doc))
        restored = doc["saved"].get("restored_unihashes") or []
        if restored and self.note_used:
            self.note_used(restored)
        logger.info("build report %d received: %s (%d restored objects used)", number, doc["build"]["name"],
                    len(restored))
        return {"id": number}

    # -- http --------------------------------------------------------------

    def get(self, url):
        """(status, content type, body) of a GET, or None if url is not the dashboard's."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path
        if path == "/":
            return 200, "text/html; charset=utf-8", page(self.summary()).encode()
        if path == API + "summary":
            return 200, "application/json", _json(self.summary())
        if path == API + "reports":
            query = urllib.parse.parse_qs(parts.query)
            try:
                limit = max(1, min(MAX_ROWS, int(query.get("limit", ["100"])[0])))
            except ValueError:
                return 400, "application/json", _json({"error": "limit must be a number"})
            rows = self.history.rows("equivcache_reports", limit)
            return 200, "application/json", _json({"format": "equivcache-reports", "version": VERSION,
                                                   "reports": [public_report(r) for r in rows][::-1]})
        if path in ("/plots/hit-rate.svg", "/plots/saved.svg"):
            from equivcache.server.http import plots
            summary = self.summary()
            draw = plots.hit_rate if path.endswith("hit-rate.svg") else plots.saved
            return 200, "image/svg+xml", draw(summary)
        return None


def _json(doc):
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


# -- the page ---------------------------------------------------------------

STYLE = """
body{font-family:sans-serif;margin:1.5em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ccc}
.figures{display:flex;flex-wrap:wrap;gap:1em}.figure{border:1px solid #ccc;border-radius:4px;padding:.6em 1em}
.figure b{display:block;font-size:1.6em}table{border-collapse:collapse}td,th{padding:.2em .7em;text-align:left}
tr:nth-child(even){background:#f4f4f4}.bar{background:#ddd;width:30em;height:1em}.bar div{background:#4a7;height:1em}
img{max-width:100%}.note{color:#666}
"""


def _times(ratio):
    """A ratio of time saved, shown from 0 as the time saved is (the API keeps its sign)."""
    return "n/a" if ratio is None else "%.1fx" % max(0.0, ratio)


def _pct(rate):
    return "n/a" if rate is None else "%.1f%%" % (100 * rate)


def _table(headers, rows):
    head = "".join("<th>%s</th>" % html.escape(h) for h in headers)
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % c for c in row) for row in rows)
    return "<table><tr>%s</tr>%s</table>" % (head, body)


def page(s):
    """The dashboard page of a summary: HTML and CSS only, every number also in the API."""
    e = html.escape
    b, c = s["builds"], s["cache"]
    figures = [
        ("builds", "builds reported", str(b["reports"])),
        ("hit-rate", "setscene hit rate", _pct(b["hit_rate"])),
        ("saved", "build time saved", duration(max(0.0, b["net_seconds"]))),
        ("ratio", "times the builds' own time", _times(b["ratio"])),
        ("skipped", "tasks skipped", str(b["skipped"])),
        ("restored", "restored", str(b["restored"])),
        ("covered", "covered", str(b["covered"])),
        ("unknown", "of unknown duration", str(b["unknown"])),
    ]
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>equivcache dashboard</title>",
           "<style>%s</style></head><body><h1>What the cache gave its builds</h1>" % STYLE,
           "<p class=\"note\">%s; every number is also at <a href=\"%ssummary\">%ssummary</a>.</p>"
           % (e(s["generated"]), API, API),
           "<div class=\"figures\">"]
    for ident, label, value in figures:
        out.append("<div class=\"figure\"><b id=\"%s\">%s</b>%s</div>" % (ident, e(value), e(label)))
    out.append("</div>")
    out.append("<p>A build skips the tasks the cache restored and the tasks those covered (fetch, configure, "
               "compile, install of the restored recipes); time saved is what each skipped task took its producer "
               "(the cache's durations.json), each once, less what restoring took here. Tasks without a producer's "
               "duration are counted as unknown, never guessed.</p>")
    out.append("<h2>Hit rate and time saved</h2>")
    if b["reports"]:
        out.append("<img src=\"/plots/hit-rate.svg\" alt=\"setscene hit rate per build and per day\">")
        out.append("<img src=\"/plots/saved.svg\" alt=\"build time saved per day\">")
    else:
        out.append("<p>No build has reported yet: set <code>EQUIVCACHE_REPORT_TO = \"URL of this cache\"</code> "
                   "in the builds' local.conf (with <code>INHERIT += \"equivcache\"</code> and "
                   "<code>BB_SIGNATURE_HANDLER = \"EquivCacheHash\"</code>).</p>")
    out.append(_table(["day", "builds", "hit rate", "tasks skipped", "time saved", "times the builds' time",
                       "unknown"],
                      [(e(d["day"]), d["builds"], _pct(d["hit_rate"]), d["skipped"],
                        duration(max(0.0, d["net_seconds"])), _times(d["ratio"]), d["unknown"])
                       for d in reversed(s["per_day"])]))
    out.append("<h2>Recent builds</h2>")
    out.append(_table(["received", "reporter", "targets", "wanted", "local", "mirror", "missed", "hit rate",
                       "skipped", "saved", "times its time", "unknown"],
                      [(e(r["received"]), e(r["reporter"] or "-"), e(" ".join(r["targets"])), r["wanted"], r["local"],
                        r["mirror"], r["missed"], _pct(r["hit_rate"]), r["skipped"],
                        duration(max(0.0, r["net_seconds"])), _times(r["ratio"]), r["unknown"])
                       for r in s["recent"]]))
    out.append("<h2>What misses most</h2>")
    if s["misses"]:
        out.append(_table(["recipe", "task", "builds", "why"],
                          [(e(m["recipe"]), e(m["task"]), m["builds"],
                            e(", ".join("%d %s" % (n, buildreport.CLASS_TEXT.get(k, k))
                                        for k, n in sorted(m["classes"].items())))) for m in s["misses"]]))
        out.append("<p>Why a task misses on your build: <code>equivcache-doctor TARGET</code> in its build "
                   "directory names the variables and files that differ from the cache's signatures.</p>")
    else:
        out.append("<p>No reported build missed.</p>")
    out.append("<h2>The cache</h2>")
    if c.get("max_size"):
        width = min(100, 100 * c["bytes"] // c["max_size"])
        out.append("<p id=\"cache-size\">%s of gc's bound %s (%d%%), %d objects</p><div class=\"bar\">"
                   "<div style=\"width:%d%%\"></div></div>" % (e(human(c["bytes"])), e(human(c["max_size"])),
                                                              width, c["objects"], width))
    else:
        out.append("<p id=\"cache-size\">%s, %d objects; no gc bound (equivcache-server gc --max-size SIZE)</p>"
                   % (e(human(c.get("bytes", 0))), c.get("objects", 0)))
    out.append(_table(["gc run", "evicted", "freed", "kept"],
                      [(e(g["at"]), g["evicted"], e(human(g["evicted_bytes"])), e(human(g["kept_bytes"])))
                       for g in s["gc"]]) if s["gc"] else "<p>gc has not evicted anything yet.</p>")
    out.append("<h2>Publishes</h2>")
    out.append(_table(["producer", "publishes", "files", "size", "last"],
                      [(e(p["producer"]), p["publishes"], p["files"], e(human(p["bytes"])), e(p["last"] or ""))
                       for p in s["publishes"]]))
    out.append("<h2>Hash equivalence server</h2>")
    out.append(_table(["table", "rows"], [(e(k), v) for k, v in sorted(s["hashserv"].items())]))
    out.append("</body></html>\n")
    return "\n".join(out)
