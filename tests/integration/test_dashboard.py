# SPDX-License-Identifier: MIT
#
# What the cache saved, against a real equivcache-server serve and its real
# bitbake-hashserv: durations from buildstats through a local and a remote
# publish into the served durations.json and a build report; build reports
# sent to the dashboard (accepted, refused, bounded), its JSON API against
# its schema, its page and plots, status's headline; the history in a real
# PostgreSQL.

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jsonschema
import pytest

from conftest import need_bitbake, needs_postgresql
from oeqa.utils.equivcache import SERVER, CacheServer, buildstats_task, sigdata
from oeqa.utils.equivcache_services import PostgreSQL

need_bitbake()

from equivcache import durations, report, reportsend  # noqa: E402
from equivcache.server.store.history import History  # noqa: E402
from equivcache.server.store.layout import Layout  # noqa: E402
from test_server import h, make_producer  # noqa: E402

SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "lib", "equivcache", "schemas")


def run(*args):
    return subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, timeout=120)


def schema(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        return json.load(f)


def get(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.status, answer.headers.get("Content-Type"), answer.read()


def post(url, body):
    request = urllib.request.Request(url + reportsend.PATH, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def timed_producer(directory, recipes, compile=False):
    """A producer (make_producer) whose buildstats and signature data time
    each recipe's do_populate_sysroot, and with compile its do_compile (no
    object: restoring the recipe spares it): {(recipe, task, unihash): seconds}."""
    entries = [(h("t" + r), h("o" + r), h("u" + r), r, "do_populate_sysroot") for r in recipes]
    make_producer(directory, entries)
    tmp = os.path.join(directory, "tmp")
    expected = {}
    for i, recipe in enumerate(recipes):
        started = 1000.0 + 100 * i
        for task, unihash, seconds in (("do_compile", h("c" + recipe), 20.0 + i),
                                       ("do_populate_sysroot", h("u" + recipe), 1.25 + 3 * i))[not compile:]:
            buildstats_task(os.path.join(tmp, "buildstats"), "20261201000000", "%s-1.0-r0" % recipe, task, started,
                            started + seconds)
            sigdata(os.path.join(tmp, "stamps"), "x86_64-linux", recipe, "1.0", task, unihash, started + seconds + 0.02)
            expected[(recipe, task, unihash)] = seconds
            started += 50
    return expected


def consumer_report(spared, timed, source):
    """A build report of a consumer that restored the do_populate_sysroot of `spared` ({(recipe, task,
    unihash)}) from the mirror, one second of setscene each, skipped their other tasks as covered,
    and missed one task."""
    r = report.BuildRecord("20261203%06d" % len(spared), ["core-image-minimal"], started=time.time() - 60)
    restored = {k for k in spared if k[1] == "do_populate_sysroot"}
    for recipe, task, unihash in spared - restored:
        r.task_covered("%s:%s" % (recipe, task), recipe, task, unihash, unihash)
    entries = {"%s:%s" % (k[0], k[1]): {"recipe": k[0], "task": k[1], "unihash": k[2], "taskhash": k[2],
                                        "where": "mirror", "path": ""} for k in restored}
    entries["zlib:do_package"] = {"recipe": "zlib", "task": "do_package", "unihash": h("z"), "taskhash": h("z"),
                                  "where": "missed", "path": ""}
    r.sstate_checked(entries)
    for tid in sorted(entries):
        if tid != "zlib:do_package":
            r.scene_task_started(tid, 100.0)
            r.scene_task_completed(tid, 101.0)
    return r.document(durations=timed, durations_source=source)


def test_durations_through_publish_to_the_report(tmp_path):
    expected = timed_producer(str(tmp_path / "p1"), ["aa", "bb", "cc"], compile=True)
    cache_dir = str(tmp_path / "cache")
    result = run("publish", "--from", str(tmp_path / "p1"), cache_dir)
    assert result.returncode == 0, result
    assert "durations: 6 tasks timed by the producer's buildstats (3 with an sstate object, 3 that restoring " \
        "their recipe's objects spares)" in result.stdout
    assert "durations: 3 objects' tasks and 3 tasks they spare newly timed" in result.stdout
    server = CacheServer(cache_dir)
    try:
        _, kind, body = get(server.url + "/" + durations.NAME)
        doc = json.loads(body)
        jsonschema.validate(doc, schema("durations-v2.json"))
        assert {k: e["seconds"] for k, e in durations.entries_of(doc).items()} == expected
        assert {e["producer"] for e in doc["tasks"]} == {"local"}

        # A remote producer without buildstats: its objects stay untimed, the others keep their durations.
        token = run("token", "add", "ci-2", cache_dir).stdout.strip()
        token_file = tmp_path / "ci-2.token"
        token_file.write_text(token + "\n")
        os.chmod(token_file, 0o600)
        make_producer(str(tmp_path / "p2"), [(h("t2"), h("o2"), h("u2"), "dd", "do_populate_sysroot")])
        result = run("publish", "--from", str(tmp_path / "p2"), "--to", server.url, "--token-file", str(token_file))
        assert result.returncode == 0, result
        assert "durations: no buildstats at" in result.stdout and 'USER_CLASSES += "buildstats"' in result.stdout
        # A remote producer with buildstats: timed under its token's name.
        more = timed_producer(str(tmp_path / "p3"), ["ee"], compile=True)
        result = run("publish", "--from", str(tmp_path / "p3"), "--to", server.url, "--token-file", str(token_file))
        assert result.returncode == 0, result
        assert "durations: 1 objects' tasks and 1 tasks they spare newly timed" in result.stdout
        doc = json.loads(get(server.url + "/" + durations.NAME)[2])
        assert {k: (e["seconds"], e["producer"]) for k, e in durations.entries_of(doc).items()} == {
            **{k: (s, "local") for k, s in expected.items()}, **{k: (s, "ci-2") for k, s in more.items()}}

        # The report of a consumer that restored aa, bb, ee and dd (untimed), and skipped their compiles.
        spared = {k for k in set(expected) | set(more) if k[0] != "cc"} | {("dd", "do_populate_sysroot", h("u2")),
                                                                           ("dd", "do_compile", h("cdd"))}
        saved = consumer_report(spared, durations.seconds_by_task(doc), server.url + "/durations.json")["saved"]
        timed = [s for k, s in list(expected.items()) + list(more.items()) if k in spared]
        assert (saved["skipped"], saved["restored"], saved["covered"], saved["timed"], saved["unknown"]) == \
            (8, 4, 4, 6, 2)
        assert saved["producer_seconds"] == pytest.approx(sum(timed))
        assert saved["net_seconds"] == pytest.approx(sum(timed) - 3.0)
        # Publishes per producer, local and remote, with the files each brought (objects, .siginfo, sigdata).
        publishes = {p["producer"]: p for p in json.loads(get(server.url + "/api/v1/summary")[2])["publishes"]}
        assert {n: (p["publishes"], p["files"]) for n, p in publishes.items()} == {"local": (1, 12), "ci-2": (2, 6)}
    finally:
        assert server.stop() == 0

    # gc drops the durations of what it evicts.
    result = run("gc", "--max-size", "1", "--keep-publishes", "0", cache_dir)
    assert result.returncode == 0, result
    with open(os.path.join(cache_dir, durations.NAME)) as f:
        assert json.load(f)["tasks"] == []
    layout = Layout(cache_dir)
    runs = History(layout, layout.database).rows("equivcache_gc")
    assert [(r["evicted"], r["kept_bytes"], r["max_size"]) for r in runs] == [(5, 0, 1)], runs


def test_reports_dashboard_and_status(tmp_path):
    cache_dir = str(tmp_path / "cache")
    timed_producer(str(tmp_path / "p1"), ["aa", "bb"], compile=True)
    assert run("publish", "--from", str(tmp_path / "p1"), cache_dir).returncode == 0
    server = CacheServer(cache_dir, extra=["--history-rows", "4"])
    try:
        doc = json.loads(get(server.url + "/" + durations.NAME)[2])
        restored = set(durations.entries_of(doc))
        sent = []
        for n in range(5):
            full = consumer_report(restored, durations.seconds_by_task(doc), server.url + "/durations.json")
            compact = reportsend.compact(full, "builder-%d" % n)
            assert "tasks" not in compact["saved"] and compact["misses"]["tasks"]
            status, answer = post(server.url, json.dumps(compact).encode())
            assert status == 201, answer
            sent.append((answer["id"], compact))
        # The reportsend module as the class runs it (the same process it detaches).
        path = tmp_path / "report.json"
        path.write_text(json.dumps(full))
        out = subprocess.run([sys.executable, "-m", "equivcache.reportsend", server.url, str(path)],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.path.join(
                                 os.path.dirname(SCHEMAS), "..")), timeout=60)
        assert out.returncode == 0 and "sent to %s (report" % server.url in out.stdout, out
        # Bad reports: refused with a reason, nothing kept.
        for body, status in ((b"{", 400), (json.dumps({"format": "x"}).encode(), 400),
                             (json.dumps(dict(compact, version=9)).encode(), 400),
                             (json.dumps(dict(compact, setscene={"wanted": -1})).encode(), 400),
                             (json.dumps(dict(compact, reporter="x" * 300)).encode(), 400)):
            got, answer = post(server.url, body)
            assert got == status and answer["error"], (got, answer)
        # Too big: refused on its Content-Length, before its body.
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        connection.putrequest("POST", reportsend.PATH)
        connection.putheader("Content-Length", str(reportsend.LIMIT + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and b"at most" in response.read()
        connection.close()

        _, kind, body = get(server.url + "/api/v1/summary")
        summary = json.loads(body)
        assert kind == "application/json"
        jsonschema.validate(summary, schema("dashboard-v2.json"))
        b = summary["builds"]
        # Bounded: 6 reports sent, the newest 4 kept.
        assert b["reports"] == 4
        assert [r["reporter"] for r in summary["recent"]] == ["", "builder-4", "builder-3", "builder-2"]
        assert (b["skipped"], b["restored"], b["covered"], b["unknown"]) == (16, 8, 8, 0)
        assert b["ratio"] == pytest.approx(b["net_seconds"] / b["wall_seconds"], abs=1e-3) and b["wall_seconds"] > 0
        assert summary["per_day"][-1]["skipped"] == 16 and summary["recent"][0]["covered"] == 2
        assert b["net_seconds"] == pytest.approx(4 * full["saved"]["net_seconds"])
        assert b["hit_rate"] == pytest.approx(2 / 3, abs=1e-4)
        assert summary["misses"] == [{"recipe": "zlib", "task": "do_package", "builds": 4,
                                      "classes": {"unknown": 4}}]
        assert summary["publishes"][0]["producer"] == "local" and summary["publishes"][0]["publishes"] == 1
        assert summary["cache"]["objects"] == 2 and summary["hashserv"]["unihashes_v3"] == 2
        reports = json.loads(get(server.url + "/api/v1/reports?limit=2")[2])
        assert [r["id"] for r in reports["reports"]] == [sent[-1][0] + 1, sent[-1][0]]
        jsonschema.validate(reports["reports"][0], dict(schema("dashboard-v2.json")["$defs"]["report"],
                                                        **{"$defs": schema("dashboard-v2.json")["$defs"]}))

        _, kind, page = get(server.url + "/")
        page = page.decode()
        assert kind.startswith("text/html") and "<script" not in page
        assert '<b id="builds">4</b>' in page and '<b id="hit-rate">66.7%</b>' in page
        assert '<b id="skipped">16</b>' in page and '<b id="covered">8</b>' in page
        assert "equivcache-doctor" in page
        for plot in ("/plots/hit-rate.svg", "/plots/saved.svg"):
            _, kind, svg = get(server.url + plot)
            assert kind == "image/svg+xml" and b"<svg" in svg and b"<script" not in svg
            # Nothing loaded from elsewhere: the only URLs are XML namespaces and the DTD's name.
            assert set(re.findall(rb"https?://[^\"' >]+", svg)) <= {
                b"http://www.w3.org/2000/svg", b"http://www.w3.org/1999/xlink",
                b"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"}, svg[:2000]
            assert b"@import" not in svg and b"<image" not in svg

        result = run("status", cache_dir)
        assert result.returncode == 0, result
        assert "builds reported  4 (setscene hit rate 66.7%; 16 tasks skipped: 8 restored, 8 covered; saved " \
            in result.stdout, result.stdout
        assert "publishes        1 by 1 producers" in result.stdout
        assert "misses most      zlib:do_package (in 4 builds)" in result.stdout
    finally:
        assert server.stop() == 0
    # Stopped: status reads the SQLite history itself.
    assert "builds reported  4 (" in run("status", cache_dir).stdout

    refusing = CacheServer(cache_dir, extra=["--no-reports"])
    try:
        status, answer = post(refusing.url, json.dumps(sent[0][1]).encode())
        assert status == 405 and "--no-reports" in answer["error"]
    finally:
        assert refusing.stop() == 0


def test_history_bounds_by_age(tmp_path):
    layout = Layout(str(tmp_path / "cache"))
    layout.create()
    history = History(layout, layout.database, max_rows=100, max_days=10)
    now = time.time()
    for age in (30, 20, 5, 1):
        history.note_publish("ci-%d" % age, 1, 1, 1, now=now - age * 86400)
    assert [r["producer"] for r in history.rows("equivcache_publishes")] == ["ci-5", "ci-1"]
    assert os.stat(os.path.join(layout.private, "history.db")).st_mode & 0o777 == 0o600


@needs_postgresql
def test_history_in_postgresql(tmp_path):
    postgres = PostgreSQL(str(tmp_path / "pg"))
    try:
        layout = Layout(str(tmp_path / "cache"))
        layout.create()
        history = History(layout, postgres.url, max_rows=3)
        doc = reportsend.compact(consumer_report({("aa", "do_populate_sysroot", h("uaa"))},
                                                 {("do_populate_sysroot", h("uaa")): 12.5}, "x"), "b")
        ids = [history.add_report(doc) for _ in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        rows = history.rows("equivcache_reports")
        assert [r["id"] for r in rows] == ids[-3:]
        assert rows[0]["producer_seconds"] == 12.5 and rows[0]["reporter"] == "b"
        assert postgres.query("SELECT COUNT(*) FROM equivcache_reports") == "3"
        assert not os.path.exists(os.path.join(layout.private, "history.db"))

        # A cache whose equivalences are in PostgreSQL: serve keeps its builds' reports there too (a
        # database is one cache's: the three reports above are this one's history as well).
        cache_dir = str(tmp_path / "pgcache")
        timed_producer(str(tmp_path / "p1"), ["aa"])
        assert run("publish", "--database", postgres.url, "--from", str(tmp_path / "p1"), cache_dir).returncode == 0
        server = CacheServer(cache_dir)
        try:
            status, answer = post(server.url, json.dumps(doc).encode())
            assert status == 201, answer
            summary = json.loads(get(server.url + "/api/v1/summary")[2])
            assert summary["builds"]["reports"] == 4 and summary["publishes"][0]["producer"] == "local"
            assert summary["recent"][0]["id"] == answer["id"]
        finally:
            assert server.stop() == 0
        assert postgres.query("SELECT COUNT(*) FROM equivcache_reports") == "4"
        assert postgres.query("SELECT COUNT(*) FROM equivcache_publishes") == "1"
        assert not os.path.exists(os.path.join(cache_dir, "server", "history.db"))
    finally:
        postgres.stop()


def test_history_adds_columns_to_an_older_table(tmp_path):
    """A history kept by an older server (no covered or wall_seconds columns) takes version 3 reports:
    the columns are added on first use, the old rows kept."""
    import sqlite3
    layout = Layout(str(tmp_path / "cache"))
    layout.create()
    path = os.path.join(layout.private, "history.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE equivcache_reports (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, %s)"
                   % ", ".join("%s %s" % c[:2] for c in history_columns_before()))
        db.execute("INSERT INTO equivcache_reports (at, reporter, build, targets, succeeded, wanted, local_hits, "
                   "mirror_hits, missed, tasks_run, restored, timed, unknown, producer_seconds, setscene_seconds, "
                   "net_seconds, misses) VALUES (?, 'old', 'b', 't', 1, 2, 1, 1, 0, 0, 2, 2, 0, 3.0, 1.0, 2.0, '[]')",
                   (time.time() - 60,))
    history = History(layout, layout.database)
    doc = consumer_report({("aa", "do_populate_sysroot", h("uaa")), ("aa", "do_compile", h("caa"))},
                          {("do_compile", h("caa")): 30.0}, "x")
    history.add_report(doc)
    rows = history.rows("equivcache_reports")
    assert [(r["reporter"], r["covered"]) for r in rows] == [("old", None), ("", 1)]
    assert rows[1]["wall_seconds"] == pytest.approx(doc["build"]["wall_seconds"])


def history_columns_before():
    from equivcache.server.store.history import ADDED_COLUMNS, REPORT_COLUMNS
    added = {c for _, c, _, _ in ADDED_COLUMNS}
    return [c for c in REPORT_COLUMNS if c[0] not in added]
