# SPDX-License-Identifier: MIT
#
# oe-selftest cases for equivcache-server and equivcache-client end to end:
# the shared producer published, served (SQLite, PostgreSQL), and consumed
# by a build directory configured from the server's URL alone.
#   oe-selftest -r equivcache_server

import contextlib
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import time

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import CHAIN, SERVER, ProducerTestCase, fresh_bitbake_server
from oeqa.utils.commands import runCmd
from oeqa.utils.equivcache import (CacheServer, HttpMirror, database_rows, executed_tasks, sstate_summary, wait_for,
                                   warnings)
from oeqa.utils.equivcache_services import PostgreSQL

from equivcache import names, pathkeys
from equivcache.server.commands import gc
from equivcache.server.store import open_cache

DAY = 86400


def age(cache, groups, days):
    """Make groups (Cache.scan's) last used and published `days` ago."""
    when = time.time() - days * DAY
    for group in groups:
        for rel in group.files:
            cache.storage.touch(rel, when)


def recipe_of(group):
    return os.path.basename(group.files[0]).split(":")[1]


@OETestTag("meta-equivcache")
class EquivCacheServerTests(ProducerTestCase):
    """publish, serve and equivcache-client, in real builds."""

    def assert_published_cache_works(self, server):
        self.assertIn("wrote conf/site.conf", self.configure_client(server.url))
        self.assertIn("conf/site.conf is already up to date", self.configure_client(server.url))
        with open(os.path.join(self.builddir, "conf", "site.conf")) as f:
            site = f.read()
        self.assertEqual(site.count('INHERIT += "equivcache"'), 1, msg=site)
        self.assertEqual(site.count('EQUIVCACHE_SERVER = "%s"' % server.url), 1, msg=site)
        self.consumer("", inherit=False)
        output = self.build()
        self.assertIn('set BB_HASHSERVE_UPSTREAM = "%s"' % server.hashserv, output)
        self.assertEqual(warnings(output), [], msg=output)
        self.assert_full_match(output)

    def test_published_cache_sqlite(self):
        """publish, serve (SQLite), equivcache-client: a fresh consumer gets 100% from the mirror. Its
        talk with the cache, counted on a recording copy of the mirror: at most two requests before
        its first task (the descriptor, which carries the sstate index's head, and the index's
        journal), at most one after (index.json, which carries the durations), besides the objects
        its setscene tasks fetch."""
        cache_dir, server, output = self.publish_and_serve("cache")
        self.assertRegex(output, r"sstate: [1-9]\d* files copied")
        self.assertRegex(output, r"equivalences: [1-9]\d* output hashes \([1-9]\d* new\)")
        self.assert_published_cache_works(server)

        mirror = HttpMirror(cache_dir)
        self.addCleanup(mirror.close)
        self.configure_client(mirror.url)
        del mirror.requests[:]   # equivcache-client's own reading of the descriptor
        for path in glob.glob(os.path.join(self.workdir, "tmp*")) + [os.path.join(self.workdir, "sstate-cache")]:
            shutil.rmtree(path, ignore_errors=True)
        output = self.build()
        self.assert_full_match(output)
        talk = [r for r in mirror.requests if not r[1].startswith("/sstate-cache/") or r[1] == "/sstate-cache/"]
        after = [r for r in talk if r[1] in ("/index.json", "/durations.json")]
        with open(os.path.join(cache_dir, pathkeys.DIRECTORY, pathkeys.HEAD)) as f:
            journal = json.load(f)["journal"]
        self.assertEqual(talk[:len(talk) - len(after)], [("GET", "/equivcache.json"),
                                                         ("GET", "/%s/%s" % (pathkeys.DIRECTORY, journal))],
                         msg=mirror.requests)
        self.assertEqual(after, [("GET", "/index.json")], msg=mirror.requests)
        report = self.build_report()
        self.assertEqual(report["saved"]["durations"], mirror.url + "/durations.json")

    def test_published_cache_postgresql(self):
        """The same, with the cache's database in a real PostgreSQL server."""
        postgres = PostgreSQL(os.path.join(self.workdir, "pg"))
        self.addCleanup(postgres.stop)
        cache_dir, server, output = self.publish_and_serve("cache", database=postgres.url)
        self.assertRegex(output, r"equivalences: [1-9]\d* output hashes \([1-9]\d* new\)")
        self.assertFalse(os.path.exists(os.path.join(cache_dir, "hashserv.db")))
        self.assertGreater(int(postgres.query("SELECT COUNT(*) FROM outhashes_v2")), 0)
        self.assert_published_cache_works(server)

    def test_remote_producer(self):
        """A producer build with EQUIVCACHE_PUBLISH publishes to a served cache at build end, in
        the background; publish --to from its build directory (SSTATE_DIR outside it, as bitbake
        resolves it) then sends nothing; a consumer gets 100%; a refused token is one warning."""
        cache_dir = os.path.join(self.workdir, "cache")
        server = CacheServer(cache_dir)
        self.addCleanup(server.stop)
        token = os.path.join(self.workdir, "ci-1.token")
        with open(token, "w") as f:
            f.write(runCmd([SERVER, "token", "add", "ci-1", cache_dir]).output.splitlines()[-1])
        producer = ('TMPDIR = "{p}/tmp"\nSSTATE_DIR = "{p}/sstate-cache"\nPERSISTENT_DIR = "{p}/persistent"\n'
                    'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\nEQUIVCACHE_TEST_SAME_OUTPUT = "1"\n'
                    'INHERIT += "equivcache"\nEQUIVCACHE_PUBLISH = "{u}"\nEQUIVCACHE_PUBLISH_TOKEN_FILE = "{t}"\n'
                    ).format(p=self.producer, u=server.url, t=token)
        self.write_config(producer)
        output = self.build()
        self.assertIn("equivcache: publishing this build to %s in the background" % server.url, output)
        logs = glob.glob(os.path.join(self.producer, "tmp*", "log", "equivcache", "publish.log"))
        self.assertEqual(len(logs), 1, msg=output)
        log = logs[0]

        def published():
            with open(log) as f:
                text = f.read()
            self.assertNotIn("equivcache-server:", text, msg=text)   # an error line
            return "publish: done" in text
        wait_for(published, 120, "the background publish did not finish")
        with open(log) as f:
            text = f.read()
        self.assertRegex(text, r"sstate: [1-9]\d* files uploaded", msg=text)
        self.assertRegex(text, r"equivalences: [1-9]\d* output hashes", msg=text)
        self.assertIn("consistent", runCmd([SERVER, "check", cache_dir]).output)

        fresh_bitbake_server(self.builddir)
        again = runCmd([SERVER, "publish", "--from", self.builddir, "--to", server.url, "--token-file", token])
        self.assertIn("SSTATE_DIR %s/sstate-cache" % self.producer, again.output)
        self.assertRegex(again.output, r"sstate: 0 files uploaded \(0 B\), [1-9]\d* already present", msg=again.output)

        with open(token, "w") as f:
            f.write("ci-1:wrong")
        output = self.build()
        self.assertEqual([w for w in warnings(output) if "not published" in w],
                         ["equivcache: this build was not published: %s refused token ci-1 (401): check "
                          "EQUIVCACHE_PUBLISH_TOKEN_FILE, or ask for a new token (equivcache-server token add)"
                          % server.url], msg=output)
        self.assert_published_cache_works(server)

    def test_producers_at_once(self):
        """Three producers publish --to one served cache at the same time, gc running: the shared
        producer (A with an equivalent change), one that built the same A and B and another C output,
        one with a new A output. check is clean, every object is there once, and a fresh consumer
        set up by equivcache-client gets 100% from the mirror."""
        cache_dir = os.path.join(self.workdir, "cache")
        server = CacheServer(cache_dir)
        self.addCleanup(server.stop)
        areas = [(self.producer, None)]
        for name, knob in (("p2", 'EQUIVCACHE_TEST_C_OUTPUT = "1"'), ("p3", 'EQUIVCACHE_TEST_NEW_OUTPUT = "1"')):
            area = os.path.join(self.workdir, name)
            self.write_config('TMPDIR = "{a}/tmp"\nSSTATE_DIR = "{a}/sstate-cache"\nPERSISTENT_DIR = "{a}/persistent"\n'
                              'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n{k}\n'.format(a=area, k=knob))
            self.build()
            areas.append((area, knob))
        fresh_bitbake_server(self.builddir)
        publishes = []
        for n, (area, _) in enumerate(areas):
            token = os.path.join(self.workdir, "ci-%d.token" % n)
            with open(token, "w") as f:
                f.write(runCmd([SERVER, "token", "add", "ci-%d" % n, cache_dir]).output.splitlines()[-1])
            stamps = glob.glob(os.path.join(area, "tmp*", "stamps"))
            publishes.append(subprocess.Popen(
                [SERVER, "publish", "--from", self.builddir, "--to", server.url, "--token-file", token,
                 "--sstate-dir", os.path.join(area, "sstate-cache"), "--stamps-dir", stamps[0],
                 "--downloads-dir", os.path.join(self.workdir, "no-downloads"),
                 "--hashserv-db", os.path.join(area, "persistent", "hashserv.db")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        gcs = 0
        while any(p.poll() is None for p in publishes) or not gcs:
            result = runCmd([SERVER, "gc", "--max-size", "10G", cache_dir])
            self.assertIn("gc: 0 of", result.output)
            gcs += 1
        outputs = [p.communicate()[0] for p in publishes]
        for p, output in zip(publishes, outputs):
            self.assertEqual(p.returncode, 0, msg=output)
            self.assertRegex(output, r"equivalences: [1-9]\d* output hashes", msg=output)
        self.assertIn("consistent", runCmd([SERVER, "check", cache_dir]).output)
        with open(os.path.join(cache_dir, "index.json")) as f:
            objects = [o for o in json.load(f)["objects"] if o["path"]]
        self.assertEqual(len(objects), len({o["path"] for o in objects}))
        produced = set()
        for area, _ in areas:
            produced |= {os.path.basename(rel) for rel, _, parsed in names.sstate_files(os.path.join(area, "sstate-cache"))
                         if parsed[3] == "object"}
        # Every object named by an equivalence is there once; a producer's object for an output the
        # cache already had under another unihash (wrynose's SPDX tasks of C) was dropped, its task
        # being served by the equivalent object.
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % os.path.join(cache_dir, "hashserv.db"),
                                                uri=True)) as db:
            named = {row[0] for row in db.execute("SELECT unihash FROM unihashes_v3")}
        kept = {name for name in produced if names.parse_sstate_name(name)[2] in named}
        self.assertEqual({os.path.basename(o["path"]) for o in objects}, kept, msg="\n".join(outputs))
        for name in produced - kept:
            recipe, task, _, _ = names.parse_sstate_name(name)
            self.assertIn((recipe, task), {(o["recipe"], o["task"]) for o in objects}, msg="\n".join(outputs))
        self.assert_published_cache_works(server)

    def test_read_only_endpoint(self):
        """Reports through the read endpoint are refused and the build succeeds; through the write socket they land."""
        cache_dir, server, _ = self.publish_and_serve("cache")
        database = os.path.join(cache_dir, "hashserv.db")
        before = database_rows(database)
        self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "%s"\n'
                      'EQUIVCACHE_TEST_NEW_OUTPUT = "1"\n' % server.hashserv, inherit=False)
        output = self.build()
        self.assertIn("equivcache-a-native:do_compile", executed_tasks(output), msg=output)
        self.assertEqual(warnings(output), [], msg=output)
        self.assertEqual(database_rows(database), before, msg="a consumer wrote through the read endpoint")

        # A producer on the write socket: a fresh build directory's outputs are reported.
        producer = os.path.join(self.workdir, "producer2")
        self.write_config('TMPDIR = "{p}/tmp"\nSSTATE_DIR = "{p}/sstate-cache"\nPERSISTENT_DIR = "{p}/persistent"\n'
                          'BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "{s}"\n'
                          'EQUIVCACHE_TEST_NEW_OUTPUT = "1"\n'.format(p=producer, s=server.socket))
        output = self.build()
        self.assertIn("equivcache-a-native:do_compile", executed_tasks(output), msg=output)
        after = database_rows(database)
        self.assertGreater(after["outhashes_v2"], before["outhashes_v2"], msg=output)

    def test_gc_by_age_and_size(self):
        """gc of a real producer's cache: by age (A's objects), by size (C's): a consumer
        rebuilds only A's and C's tasks, B (A's dependent, kept) comes from the mirror; the
        equivalences stay for the grace period; SIGKILL at each phase leaves a consistent cache."""
        cache_dir, server, _ = self.publish_and_serve("cache")
        cache = open_cache(cache_dir)
        layout = cache.layout
        a, b, c = CHAIN
        objects, alone = cache.scan()
        groups = list(objects.values()) + alone
        age(cache, groups, 10)
        age(cache, [g for g in objects.values() if recipe_of(g) == a], 20)
        rows = database_rows(layout.database)

        result = runCmd([SERVER, "gc", "--older-than", "15", cache_dir])
        self.assertRegex(result.output, r"gc: [1-9]\d* of \d+ objects")
        objects, alone = cache.scan()
        self.assertNotIn(a, {recipe_of(g) for g in objects.values()}, msg=result.output)
        self.assertEqual({b, c}, {recipe_of(g) for g in objects.values()}, msg=result.output)
        c_groups = [g for g in objects.values() if recipe_of(g) == c]
        age(cache, c_groups, 12)
        bound = sum(g.size for g in list(objects.values()) + alone) - sum(g.size for g in c_groups)
        result = runCmd([SERVER, "gc", "--max-size", str(bound), cache_dir])
        objects, _ = cache.scan()
        self.assertEqual({b}, {recipe_of(g) for g in objects.values()}, msg=result.output)
        self.assertIn("equivalences: none removed yet", result.output)
        self.assertEqual(database_rows(layout.database), rows, msg="equivalences went before their grace period")
        self.assertIn("consistent", runCmd([SERVER, "check", cache_dir]).output)

        # A consumer: A's and C's tasks rebuild; B, a kept dependent of A, comes from the mirror.
        self.configure_client(server.url)
        self.consumer("", inherit=False)
        output = self.build()
        ran = executed_tasks(output)
        self.assertEqual({t.split(":")[0] for t in ran if not t.endswith("_setscene")}, {a, c}, msg=output)
        self.assertIn(b + ":do_populate_sysroot_setscene", ran, msg=output)
        summary = sstate_summary(output)
        self.assertEqual(summary["mirror"], summary["wanted"] - summary["missed"], msg=output)
        self.assertGreater(summary["mirror"], 0, msg=output)
        misses = {m["recipe"] for m in self.build_report()["misses"]["tasks"]}
        self.assertEqual(misses, {a, c}, msg="only the evicted objects miss:\n%s" % output)

        # SIGKILL at every phase (a copy, grace period 0: the sweep runs), a check after each.
        copy = os.path.join(self.workdir, "cache-copy")
        shutil.copytree(cache_dir, copy, ignore=shutil.ignore_patterns("*.sock", "state.json"))
        for phase in ("plan:1", "ledger:1", "index:1", "delete:1", "mark:1", "sweep:1", None):
            env = dict(os.environ, **({gc.KILL_HOOK: phase} if phase else {}))
            result = runCmd([SERVER, "gc", "--max-size", "0", "--keep-publishes", "0", "--grace-days", "0", copy],
                            env=env, ignore_status=True)
            self.assertEqual(result.status, -9 if phase else 0, msg="%s: %s" % (phase, result.output))
            check = runCmd([SERVER, "check", copy], ignore_status=True)
            self.assertEqual(check.status, 0, msg="after SIGKILL at %s: %s" % (phase, check.output))
        self.assertEqual(open_cache(copy).scan()[0], {})
        self.assertEqual(database_rows(os.path.join(copy, "hashserv.db"))["unihashes_v3"], 0)
        self.assertEqual(database_rows(layout.database), rows, msg="gc of a copy changed the original's database")
