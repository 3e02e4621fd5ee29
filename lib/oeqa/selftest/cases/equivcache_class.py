# SPDX-License-Identifier: MIT
#
# oe-selftest cases for equivcache.bbclass: its rules on real configurations
# parsed by bitbake, in each mode (warn, fix, fatal), against the shared
# producer's mirror and read-only hash equivalence server.
#   oe-selftest -r equivcache_class

import os

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import ProducerTestCase, write_descriptor
from oeqa.utils.commands import get_bb_var, runCmd
from oeqa.utils.equivcache import HashServer, HttpMirror, executed_tasks, free_port, sstate_summary, warnings


@OETestTag("meta-equivcache")
class EquivCacheClassTests(ProducerTestCase):
    """equivcache.bbclass on the seed's scenario: the producer's sstate over http,
    its database by a read-only bitbake-hashserv, consumers configured in every way."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The release's default handler (scarthgap: OEBasicHash; wrynose: OEEquivHash).
        cls.default_handler = get_bb_var("BB_SIGNATURE_HANDLER")
        cls.mirror = HttpMirror(cls.producer)
        cls.hashserv = HashServer(cls.producer, address="127.0.0.1:%d" % free_port(), read_only=True,
                                  database=os.path.join(cls.producer, "persistent", "hashserv.db"))
        cls.hashserv_address = cls.hashserv.address
        lsbs = sorted(os.listdir(os.path.join(cls.producer, "sstate-cache")))
        write_descriptor(cls.producer, [cls.hashserv_address], [d for d in lsbs if not d.startswith(".")])
        cls.sstate_mirror = "file://.* %s/sstate-cache/PATH;downloadfilename=PATH" % cls.mirror.url

    @classmethod
    def tearDownClass(cls):
        cls.hashserv.kill()
        cls.mirror.close()
        super().tearDownClass()

    def test_warn_seed_scenario(self):
        """SSTATE_MIRRORS only (the seed's setup): rule mirror-without-upstream, once, and real misses."""
        self.consumer('BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                      'SSTATE_MIRRORS = "%s"\nSSTATE_MIRROR_ALLOW_NETWORK = "1"\n' % self.sstate_mirror)
        output = self.build()
        found = [w for w in warnings(output) if w.startswith("equivcache: ")]
        self.assertEqual(len(found), 1, msg=output)
        self.assertIn("[mirror-without-upstream]", found[0], msg=output)
        self.assertIn('Set BB_HASHSERVE_UPSTREAM = "%s"' % self.hashserv_address, found[0], msg=output)
        self.assertGreater(sstate_summary(output)["missed"], 0, msg="the seed's scenario should miss:\n%s" % output)
        self.assertIn("equivcache-a-native:do_compile", executed_tasks(output), msg=output)

    def test_fix_seed_scenario(self):
        """EQUIVCACHE_MODE = "fix" sets the upstream and lets the sstate mirror through BB_NO_NETWORK: 100% match."""
        self.consumer('EQUIVCACHE_MODE = "fix"\nBB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                      'SSTATE_MIRRORS = "%s"\n' % self.sstate_mirror)
        output = self.build()
        self.assertIn('equivcache: EQUIVCACHE_MODE = "fix": set BB_HASHSERVE_UPSTREAM = "%s" (was "")'
                      % self.hashserv_address, output)
        self.assertIn('equivcache: EQUIVCACHE_MODE = "fix": set SSTATE_MIRROR_ALLOW_NETWORK = "1" (was "")', output)
        self.assertEqual([w for w in warnings(output) if w.startswith("equivcache: ")], [], msg=output)
        self.assert_full_match(output)

    def test_known_cache_without_descriptor(self):
        """A mirror with no descriptor that the table of known caches knows (an
        entry pointed at loopback through EQUIVCACHE_KNOWN_CACHES), used as the
        sample local.conf's public mirror is, without its upstream: "fix" sets
        the upstream the table gives, and the mirror matches 100%."""
        plain = os.path.join(self.workdir, "plain")
        os.makedirs(plain)
        os.symlink(os.path.join(self.producer, "sstate-cache"), os.path.join(plain, "sstate-cache"))
        self.consumer('EQUIVCACHE_MODE = "fix"\nBB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                      'SSTATE_MIRRORS = "file://.* file://%s/sstate-cache/PATH"\n'
                      'EQUIVCACHE_KNOWN_CACHES = "file://%s/sstate-cache=%s"\n' % (plain, plain, self.hashserv_address))
        output = self.build()
        self.assertIn('equivcache: EQUIVCACHE_MODE = "fix": set BB_HASHSERVE_UPSTREAM = "%s" (was "")'
                      % self.hashserv_address, output)
        self.assertEqual([w for w in warnings(output) if w.startswith("equivcache: ")], [], msg=output)
        self.assert_full_match(output)

    def test_server_alone(self):
        """EQUIVCACHE_SERVER alone configures a consumer: 100% match."""
        self.consumer('EQUIVCACHE_SERVER = "%s"\n' % self.mirror.url)
        output = self.build()
        self.assertIn('set BB_SIGNATURE_HANDLER = "EquivCacheHash" (was "%s")' % self.default_handler, output)
        self.assertIn('set BB_HASHSERVE_UPSTREAM = "%s"' % self.hashserv_address, output)
        self.assertEqual(warnings(output), [], msg=output)
        self.assert_full_match(output)

    def test_fatal_lists_all_before_parsing(self):
        """EQUIVCACHE_MODE = "fatal" stops before recipe parsing and lists every finding."""
        self.consumer('EQUIVCACHE_MODE = "fatal"\nBB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                      'SSTATE_MIRRORS = "%s file://.*"\n' % self.sstate_mirror)
        output = self.build(expect_status=1)
        self.assertIn("equivcache: 3 problems with the sstate cache and hash equivalence configuration", output)
        for rule in ("[mirror-without-upstream]", "[no-network-mirror]", "[mirror-syntax]"):
            self.assertIn(rule, output)
        self.assertNotIn("Parsing recipes", output)

    def test_no_network_mirror_on_http(self):
        """BB_NO_NETWORK with an http sstate mirror: rule no-network-mirror, and the downloads really are refused."""
        self.consumer('BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                      'BB_HASHSERVE_UPSTREAM = "%s"\nSSTATE_MIRRORS = "%s"\n' % (self.hashserv_address, self.sstate_mirror))
        output = self.build()
        found = [w for w in warnings(output) if w.startswith("equivcache: ")]
        self.assertEqual(len(found), 1, msg=output)
        self.assertIn("[no-network-mirror]", found[0], msg=output)
        self.assertIn("No sstate archive obtainable", output, msg="BB_NO_NETWORK let the mirror through:\n%s" % output)

    def test_same_signatures(self):
        """The class changes no task signature, in any mode."""
        runs = {}
        for name, extra in (("without", None), ("warn", 'EQUIVCACHE_MODE = "warn"'),
                            ("fix", 'EQUIVCACHE_MODE = "fix"'), ("fatal", 'EQUIVCACHE_MODE = "fatal"')):
            config = self.consumer_text('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\n%s\n'
                                        % (extra or ""), inherit=extra is not None)
            runs[name], output = self.signatures_of(config, os.path.join(self.workdir, "stamps-" + name))
            self.assertEqual([w for w in warnings(output) if w.startswith("equivcache: ")], [], msg=output)
        for name in ("warn", "fix", "fatal"):
            self.assertEqual(runs["without"], runs[name], msg="EQUIVCACHE_MODE = %s changed signatures" % name)

    def test_rules_on_real_configurations(self):
        """Each rule, on a real configuration parsed by bitbake, names itself with the values involved."""
        closed = "127.0.0.1:%d" % free_port()
        lsb_dir = os.path.join(self.workdir, "other-host-mirror")
        os.makedirs(os.path.join(lsb_dir, "sstate-cache"))
        write_descriptor(lsb_dir, [self.hashserv_address], ["fedora-40"])
        file_mirror = "file://.* file://%s/sstate-cache/PATH" % lsb_dir
        equiv = 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
        upstream = 'BB_HASHSERVE_UPSTREAM = "%s"\n' % self.hashserv_address
        allow = 'SSTATE_MIRROR_ALLOW_NETWORK = "1"\n'
        from equivcache.configcheck import websockets_usable
        websockets = websockets_usable()
        table = [
            ("mirror-without-upstream", equiv + allow + 'SSTATE_MIRRORS = "%s"' % self.sstate_mirror, self.hashserv_address),
            ("upstream-ignored", 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "%s"\n' % self.hashserv_address + upstream,
             self.hashserv_address),
            ("upstream-unreachable", equiv + 'BB_HASHSERVE_UPSTREAM = "%s"' % closed, closed),
            ("server-unreachable", 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "%s"' % closed, closed),
            ("server-without-handler", 'BB_SIGNATURE_HANDLER = "OEBasicHash"\nBB_HASHSERVE = "auto"', "OEBasicHash"),
            ("mirror-without-equivalence", 'BB_SIGNATURE_HANDLER = "OEBasicHash"\nBB_HASHSERVE = ""\n' + allow +
             'SSTATE_MIRRORS = "%s"' % self.sstate_mirror, self.hashserv_address),
            ("unknown-handler", 'BB_SIGNATURE_HANDLER = "OEEquivHsh"\nBB_HASHSERVE = "auto"', "OEEquivHsh"),
            ("no-network-mirror", equiv + upstream + 'SSTATE_MIRRORS = "%s"' % self.sstate_mirror, self.mirror.url),
            ("mirror-syntax", equiv + upstream + 'SSTATE_MIRRORS = "%s file://.*"' % self.sstate_mirror,
             "the last one (file://.*) has no pair"),
            ("mirror-missing-dir", equiv + upstream + 'SSTATE_MIRRORS = "file://.* file:///nonexistent/sstate/PATH"',
             "/nonexistent/sstate"),
            ("mirror-unreachable", equiv + upstream + allow +
             'SSTATE_MIRRORS = "file://.* http://%s/sstate-cache/PATH;downloadfilename=PATH"' % closed, closed),
            ("websockets-missing", 'BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "ws://%s"' % closed,
             "ws://" + closed),
            ("descriptor-server-mismatch", equiv + allow + 'BB_HASHSERVE_UPSTREAM = "%s"\nSSTATE_MIRRORS = "%s"'
             % (closed, self.sstate_mirror), self.hashserv_address),
            ("native-lsb-mismatch", equiv + upstream + 'SSTATE_MIRRORS = "%s"' % file_mirror, "fedora-40"),
            ("descriptor", 'EQUIVCACHE_SERVER = "http://%s"' % closed, closed),
            (None, equiv + 'SSTATE_MIRRORS = "file://universal/(.*) file://universal-4.9/\\1"', None),
        ]
        for rule, config, value in table:
            with self.subTest(rule=rule):
                self.consumer(config)
                result = runCmd("bitbake-getvar BB_HASHSERVE", ignore_status=True)
                found = [w for w in warnings(result.output) if w.startswith("equivcache: ")]
                if rule is None or (rule == "websockets-missing" and websockets):
                    self.assertEqual(found, [], msg=result.output)
                    continue
                named = [w for w in found if w.startswith("equivcache: [%s] " % rule)]
                self.assertEqual(len(named), 1, msg="rule %s:\n%s" % (rule, result.output))
                self.assertIn(value, named[0], msg=result.output)

        # A rule silenced by name says nothing; an unknown name is pointed out.
        self.consumer('BB_SIGNATURE_HANDLER = "OEBasicHash"\nBB_HASHSERVE = "auto"\n'
                      'EQUIVCACHE_IGNORE = "server-without-handler no-such-rule"')
        result = runCmd("bitbake-getvar BB_HASHSERVE", ignore_status=True)
        found = [w for w in warnings(result.output) if w.startswith("equivcache: ")]
        self.assertEqual(len(found), 1, msg=result.output)
        self.assertIn('EQUIVCACHE_IGNORE names no rule "no-such-rule"', found[0], msg=result.output)

        # handler-without-server: bitbake builds the handler before any class
        # sees the configuration, and OE-core's own check stops the parse.
        self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = ""')
        result = runCmd("bitbake -e", ignore_status=True)
        self.assertNotEqual(result.status, 0, msg=result.output)
        self.assertIn("OEEquivHash requires BB_HASHSERVE to be set", result.output)
