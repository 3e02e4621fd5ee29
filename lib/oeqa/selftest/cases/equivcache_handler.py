# SPDX-License-Identifier: MIT
#
# oe-selftest cases for the EquivCacheHash signature handler: real builds
# of the test chain against real hash equivalence servers, present, absent,
# or killed before or during a build.
#   oe-selftest -r equivcache_handler

import glob
import os
import time

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import CHAIN, EquivCacheTestCase
from oeqa.utils.equivcache import executed_tasks, free_port, silent_listener, warnings


@OETestTag("meta-equivcache")
class EquivCacheHashTests(EquivCacheTestCase):
    """The EquivCacheHash signature handler, in real builds."""

    def assert_one_outage_warning(self, output, address):
        found = warnings(output)
        self.assertEqual(len(found), 1, msg="expected exactly one warning, got %d:\n%s" % (len(found), output))
        self.assertIn("Summary: There was 1 WARNING message.", output, msg=output)
        self.assertIn("EquivCacheHash: the hash equivalence server", found[0], msg=output)
        self.assertIn('BB_HASHSERVE = "%s"' % address, found[0], msg=output)
        self.assertNotIn("Traceback", output, msg=output)

    def test_handler_selected(self):
        """BB_SIGNATURE_HANDLER = "EquivCacheHash" selects the handler, and the build uses sstate."""
        self.config()
        output = self.build()
        self.assertNotIn("Invalid signature generator", output, msg=output)
        self.assertEqual(warnings(output), [], msg=output)
        for pn in CHAIN:
            objects = glob.glob(os.path.join(self.workdir, "sstate-cache", "**", "sstate:%s:*_populate_sysroot.tar.zst" % pn),
                                recursive=True)
            self.assertTrue(objects, msg="no populate_sysroot sstate object for %s (the noop handler writes none):\n%s" % (pn, output))

    def test_hash_equivalence(self):
        """A change that keeps A's output reruns A only; a change of output reruns B and C too."""
        self.config()
        self.build()

        self.append_config('EQUIVCACHE_TEST_SAME_OUTPUT = "1"')
        output = self.build()
        ran = executed_tasks(output)
        self.assertIn("equivcache-a-native:do_compile", ran, msg=output)
        self.assertNotIn("equivcache-b-native:do_compile", ran, msg=output)
        self.assertNotIn("equivcache-c-native:do_compile", ran, msg=output)

        self.append_config('EQUIVCACHE_TEST_NEW_OUTPUT = "1"')
        output = self.build()
        ran = executed_tasks(output)
        for pn in CHAIN:
            self.assertIn("%s:do_compile" % pn, ran, msg=output)

    def test_server_closed_port(self):
        """BB_HASHSERVE at a TCP port where nothing listens: one warning, the build succeeds."""
        address = "127.0.0.1:%d" % free_port()
        self.config(hashserve=address)
        output = self.build()
        self.assert_one_outage_warning(output, address)

    def test_server_silent(self):
        """BB_HASHSERVE at a host that accepts connections and never answers:
        the first query gives up after about EQUIVCACHE_SERVER_TIMEOUT, then one
        warning and the build goes on (bitbake alone waited 8 minutes)."""
        silent = silent_listener()
        self.addCleanup(silent.close)
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        self.config(hashserve=address, extra='EQUIVCACHE_SERVER_TIMEOUT = "5"')
        start = time.monotonic()
        output = self.build()
        took = time.monotonic() - start
        self.assert_one_outage_warning(output, address)
        self.assertIn("Timed out waiting for data", output, msg=output)
        # The bound is behaviour, not speed: about 5 s, then no more asking; the
        # rest is the build. bitbake's nested retries alone would be 16 x 5 s.
        self.assertLess(took, 60, msg="the build waited %.0f s for a silent server:\n%s" % (took, output))

    def test_server_missing_socket(self):
        """BB_HASHSERVE at a unix socket that does not exist: one warning, the build succeeds."""
        address = "unix://%s/no-such-dir/hashserve.sock" % self.workdir
        self.config(hashserve=address)
        output = self.build()
        self.assert_one_outage_warning(output, address)

    def test_server_killed_between_builds(self):
        """A standalone server killed after a build: the next build succeeds with one warning."""
        server = self.start_server()
        self.config(hashserve=server.address)
        output = self.build()
        self.assertEqual(warnings(output), [], msg=output)

        server.kill()
        self.append_config('EQUIVCACHE_TEST_SAME_OUTPUT = "1"')
        output = self.build()
        self.assert_one_outage_warning(output, server.address)
        # Without the server there is no equivalence: B rebuilds.
        ran = executed_tasks(output)
        self.assertIn("equivcache-a-native:do_compile", ran, msg=output)
        self.assertIn("equivcache-b-native:do_compile", ran, msg=output)

    def test_server_killed_during_build(self):
        """The server dies while tasks run: their reports fail, with one warning in all."""
        server = self.start_server()
        # A's do_compile kills the server: the runqueue got its unihashes,
        # every output hash report after that fails, in many task workers.
        self.config(hashserve=server.address, extra='EQUIVCACHE_TEST_KILL_PID = "%d"' % server.pid)
        output = self.build()
        self.assertFalse(server.process.is_alive(), msg="the server survived the build:\n%s" % output)
        self.assert_one_outage_warning(output, server.address)
        self.assertIn("reporting", warnings(output)[0], msg=output)
