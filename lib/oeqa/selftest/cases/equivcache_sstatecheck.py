# SPDX-License-Identifier: MIT
#
# oe-selftest cases for the mirror availability check from sstate indexes
# (lib/equivcache/sstatecheck.py): on the shared producer's objects, stock's
# check (EQUIVCACHE_MIRROR_INDEX = "0") and the index's find and miss the
# same tasks, with the requests each mirror received counted; an index that
# lies or is corrupt never breaks a build.
#   oe-selftest -r equivcache_sstatecheck

import glob
import os
import shutil

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import DRY_RUN, ProducerTestCase
from oeqa.utils.equivcache import HashServer, HttpMirror, executed_tasks, free_port, sstate_summary, warnings

from equivcache import pathkeys
from equivcache.server.store.local import update_sstate_index

INDEX_WARNING = "equivcache: the sstate index "


@OETestTag("meta-equivcache")
class EquivCacheSstateCheckTests(ProducerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hashserv = HashServer(cls.producer, address="127.0.0.1:%d" % free_port(), read_only=True,
                                  database=os.path.join(cls.producer, "persistent", "hashserv.db"))

    @classmethod
    def tearDownClass(cls):
        cls.hashserv.kill()
        super().tearDownClass()

    def cache(self, name, keep=lambda rel: True, index=True):
        """A copy of the producer's sstate-cache/ holding the files `keep`
        accepts, with its sstate index as publish writes it."""
        root = os.path.join(self.workdir, name)
        source = os.path.join(self.producer, "sstate-cache")
        for rel in pathkeys.listed_files(source):
            if keep(rel):
                os.makedirs(os.path.dirname(os.path.join(root, "sstate-cache", rel)), exist_ok=True)
                shutil.copy(os.path.join(source, rel), os.path.join(root, "sstate-cache", rel))
        os.makedirs(os.path.join(root, "sstate-cache"), exist_ok=True)
        if index:
            update_sstate_index(root)
        return root

    def http(self, root):
        mirror = HttpMirror(root)
        self.addCleanup(mirror.close)
        return mirror

    def check(self, mirrors, index, options=DRY_RUN, parameters=";downloadfilename=PATH"):
        """(Sstate summary, missed (recipe, task) set, output) of a consumer
        using `mirrors` ("URL" roots of sstate-cache/), with or without indexes."""
        self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\n'
                      'BB_HASHSERVE_UPSTREAM = "%s"\nSSTATE_MIRROR_ALLOW_NETWORK = "1"\n'
                      'SSTATE_MIRRORS = "%s"\nEQUIVCACHE_MIRROR_INDEX = "%d"\n'
                      % (self.hashserv.address,
                         " ".join("file://.* %s/PATH%s" % (m, parameters) for m in mirrors), index))
        for path in glob.glob(os.path.join(self.workdir, "tmp*")) + [os.path.join(self.workdir, "sstate-cache")]:
            shutil.rmtree(path, ignore_errors=True)
        output = self.build(options=options)
        report = self.build_report()
        missed = {(t["recipe"], t["task"]) for t in report["misses"]["tasks"] if t["class"] != "download-failed"}
        return sstate_summary(output), missed, output

    def assert_as_stock(self, mirrors, counted=(), expect_missed=None):
        """Stock's check and the index's give the same summary and misses;
        the index's asks the mirrors in `counted` (indexed, over http) about
        no object, only for their index, in at most two requests."""
        def asked(mirror, prefix):
            # The class's probe of the mirror (HEAD of its root) is not a question about an object.
            return len([r for r in mirror.requests_under(prefix) if r[1] != prefix])
        start = [asked(m, "/sstate-cache/") for m in counted]
        stock = self.check(mirrors, index=0)
        after_stock = [asked(m, "/sstate-cache/") for m in counted]
        index_before = [asked(m, "/sstate-index/") for m in counted]
        indexed = self.check(mirrors, index=1)
        self.assertEqual(stock[:2], indexed[:2], msg="stock:\n%s\nindex:\n%s" % (stock[2], indexed[2]))
        self.assertEqual([w for w in warnings(indexed[2]) if w.startswith("equivcache: ")], [], msg=indexed[2])
        if expect_missed is not None:
            self.assertEqual(stock[0]["missed"], expect_missed, msg=stock[2])
        for mirror, a, b, i in zip(counted, start, after_stock, index_before):
            self.assertGreater(b, a, msg="stock's check did not ask %s" % mirror.url)
            self.assertEqual(asked(mirror, "/sstate-cache/"), b, msg="the index's check asked about objects: %s" % mirror.requests[-3:])
            self.assertIn(asked(mirror, "/sstate-index/") - i, (1, 2), msg=mirror.requests)
        return indexed

    def test_found_and_missed_as_stock(self):
        """All, some and none on an http or file:// mirror, and two mirrors of which one has no index."""
        full = self.http(self.cache("full"))
        some = self.cache("some", keep=lambda rel: "equivcache-c-native" not in rel)
        some_http = self.http(some)
        empty = self.cache("none", keep=lambda rel: False)
        rest = self.cache("rest", keep=lambda rel: "equivcache-c-native" in rel, index=False)

        summary = self.assert_as_stock([full.url + "/sstate-cache"], [full], expect_missed=0)[0]
        self.assertGreater(summary["mirror"], 0)
        # A second build: the unchanged index costs one request, the head.
        n = len(full.requests)
        self.check([full.url + "/sstate-cache"], index=1)
        self.assertEqual([r for r in full.requests[n:] if r[1].startswith("/sstate-index/")],
                         [("GET", "/sstate-index/head.json")])
        self.assertEqual([r for r in full.requests[n:] if r[1].startswith("/sstate-cache/sstate")
                          or r[1].count("/") > 2], [])

        some_missed = self.assert_as_stock([some_http.url + "/sstate-cache"], [some_http])[0]["missed"]
        self.assertGreater(some_missed, 0)
        self.assert_as_stock(["file://%s/sstate-cache" % empty], expect_missed=summary["wanted"])
        # Two mirrors, the second without an index: it gives what the first
        # misses (some_missed > 0), asked as stock asks it.
        self.assert_as_stock([some_http.url + "/sstate-cache", "file://%s/sstate-cache" % rest], [some_http],
                             expect_missed=0)

    def test_index_wrong_or_corrupt(self):
        """An object the index lists but the mirror lost: the build succeeds, one
        warning names the index. A corrupt index: stock's check, one warning.
        The mirror is written without ";downloadfilename=PATH", which sstate adds
        itself: no finding, and the objects are restored."""
        root = self.cache("lost")
        mirror = self.http(root)
        lost = [rel for rel in pathkeys.listed_files(os.path.join(root, "sstate-cache"))
                if "equivcache-c-native" in rel and rel.endswith("_populate_sysroot.tar.zst")]
        self.assertEqual(len(lost), 1, msg=lost)
        os.unlink(os.path.join(root, "sstate-cache", lost[0]))
        summary, _, output = self.check([mirror.url + "/sstate-cache"], index=1, options="", parameters="")
        self.assertEqual(summary["missed"], 0, msg=output)
        ours = [w for w in warnings(output) if w.startswith("equivcache: ")]
        self.assertEqual(len(ours), 1, msg=output)
        self.assertIn(INDEX_WARNING + mirror.url + "/sstate-index/ lists " + lost[0], ours[0])
        ran = executed_tasks(output)
        self.assertIn("equivcache-c-native:do_populate_sysroot", ran, msg=output)
        self.assertIn("equivcache-b-native:do_populate_sysroot_setscene", ran, msg=output)
        self.assertNotIn("equivcache-b-native:do_compile", ran, msg=output)

        with open(os.path.join(root, "sstate-index", "head.json"), "w") as f:
            f.write("{corrupt")
        n = len(mirror.requests)
        summary, _, output = self.check([mirror.url + "/sstate-cache"], index=1)
        ours = [w for w in warnings(output) if w.startswith("equivcache: ")]
        self.assertEqual(len(ours), 1, msg=output)
        self.assertIn("cannot be used (%s/sstate-index/head.json: not JSON" % mirror.url, ours[0])
        self.assertGreater(len([r for r in mirror.requests[n:] if r[1].startswith("/sstate-cache/sstate")
                                or r[1].count("/") > 2]), 0, msg=mirror.requests[n:])
        self.assertEqual(summary["missed"], 1, msg=output)
