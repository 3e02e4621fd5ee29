# SPDX-License-Identifier: MIT
#
# oe-selftest cases for equivcache-server and equivcache-client end to end:
# the shared producer published, served (SQLite, PostgreSQL), and consumed
# by a build directory configured from the server's URL alone.
#   oe-selftest -r equivcache_server

import os

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import ProducerTestCase
from oeqa.utils.equivcache import PostgreSQL, database_rows, executed_tasks, warnings


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
        """publish, serve (SQLite), equivcache-client: a fresh consumer gets 100% from the mirror."""
        cache_dir, server, output = self.publish_and_serve("cache")
        self.assertRegex(output, r"sstate: [1-9]\d* files copied")
        self.assertRegex(output, r"equivalences: [1-9]\d* output hashes \([1-9]\d* new\)")
        self.assert_published_cache_works(server)

    def test_published_cache_postgresql(self):
        """The same, with the cache's database in a real PostgreSQL server."""
        postgres = PostgreSQL(os.path.join(self.workdir, "pg"))
        self.addCleanup(postgres.stop)
        cache_dir, server, output = self.publish_and_serve("cache", database=postgres.url)
        self.assertRegex(output, r"equivalences: [1-9]\d* output hashes \([1-9]\d* new\)")
        self.assertFalse(os.path.exists(os.path.join(cache_dir, "hashserv.db")))
        self.assertGreater(int(postgres.query("SELECT COUNT(*) FROM outhashes_v2")), 0)
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
