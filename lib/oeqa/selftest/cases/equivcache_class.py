# SPDX-License-Identifier: MIT
#
# oe-selftest cases for equivcache.bbclass: its rules on real configurations
# parsed by bitbake, in each mode (warn, fix, fatal), against the shared
# producer's mirror and read-only hash equivalence server.
#   oe-selftest -r equivcache_class

import os
import re
import shutil

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import CHAIN, DRY_RUN, TARGET, ProducerTestCase, fresh_bitbake_server, write_descriptor
from oeqa.utils.commands import bitbake, get_bb_var, runCmd
from oeqa.utils.equivcache import (HashServer, HttpMirror, executed_tasks, free_port, silent_listener, sstate_summary,
                                   warnings)


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
        # ... after the Sstate summary counted them as on the mirror.
        self.assertGreater(sstate_summary(output)["mirror"], 0, msg=output)

    def test_stale_hash_server(self):
        """A bitbake server that stays between commands (BB_SERVER_TIMEOUT) keeps the auto hash equivalence
        server it started: an upstream set afterwards is ignored, the mirror misses, and rule
        stale-hash-server says to run bitbake -m; after it, the same configuration gets 100% from the mirror."""
        self.addCleanup(fresh_bitbake_server, self.builddir)
        base = ('BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\nBB_SERVER_TIMEOUT = "60"\n'
                'EQUIVCACHE_IGNORE = "mirror-without-upstream"\n'
                'SSTATE_MIRRORS = "file://.* file://%s/sstate-cache/PATH"\n' % self.producer)
        self.consumer(base)
        self.build(DRY_RUN)
        self.consumer(base + 'BB_HASHSERVE_UPSTREAM = "%s"\n' % self.hashserv_address)
        result = bitbake("%s %s" % (DRY_RUN, TARGET), ignore_status=True)   # the same bitbake server, still running
        self.assertEqual(result.status, 0, msg=result.output)
        found = [w for w in warnings(result.output) if w.startswith("equivcache: ")]
        self.assertEqual(len(found), 1, msg=result.output)
        self.assertIn('[stale-hash-server] this bitbake server started its BB_HASHSERVE = "auto" hash equivalence '
                      'server with BB_HASHSERVE_UPSTREAM "" (now "%s")' % self.hashserv_address, found[0])
        self.assertIn('Run "bitbake -m"', found[0])
        self.assertGreater(sstate_summary(result.output)["missed"], 0, msg=result.output)
        output = self.build(DRY_RUN)   # after bitbake -m
        self.assertEqual([w for w in warnings(output) if w.startswith("equivcache: ")], [], msg=output)
        self.assert_full_match(output)

    def test_shared_sstate_private_database(self):
        """SSTATE_DIR outside the build directory and the auto server's database inside it. A first build
        there gets no finding: nothing says SSTATE_DIR is shared. A second build using it with its own
        database gets one naming the first (the producer's objects miss for it although they are in
        SSTATE_DIR). With OEEquivHash, wrynose's sanity.bbclass warns anyway and the class does not repeat
        it. With EquivCacheHash in fix mode, wrynose gets BB_HASHSERVE_DB_DIR = SSTATE_DIR: the database
        shared there gives 100%; scarthgap has no such variable and keeps the warning."""
        from equivcache.autoserver import database_dir_variable
        shared = os.path.join(os.path.dirname(self.builddir), "ec-shared-sstate")   # outside TOPDIR
        shutil.rmtree(shared, ignore_errors=True)
        shutil.copytree(os.path.join(self.producer, "sstate-cache"), shared, symlinks=True)
        self.addCleanup(shutil.rmtree, shared, True)
        stock = "Sstate directory is shared between several builds"
        rule = "equivcache: [shared-sstate-private-database] "
        base = 'BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\nSSTATE_DIR = "%s"\n' % shared

        first = os.path.join(self.workdir, "first")
        self.consumer(base, workdir=first)
        output = self.build(DRY_RUN)
        self.assertNotIn(stock, output)
        self.assertEqual([w for w in warnings(output) if w.startswith(rule)], [], msg=output)

        self.consumer(base, workdir=os.path.join(self.workdir, "second"))
        output = self.build(DRY_RUN)
        summary = sstate_summary(output)
        self.assertLess(summary["local"], summary["wanted"], msg="the objects should miss here:\n%s" % output)
        ours = [w for w in warnings(output) if w.startswith(rule)]
        self.assertEqual(len(ours), 1, msg=output)
        self.assertIn('SSTATE_DIR = "%s" is shared with the build in %s (database %s/persistent/hashserv.db)'
                      % (shared, self.builddir, first), ours[0])
        self.assertIn("BB_HASHSERVE_DB_DIR" if database_dir_variable() else "PERSISTENT_DIR", ours[0])

        self.consumer(base.replace("EquivCacheHash", "OEEquivHash"), workdir=os.path.join(self.workdir, "stock"))
        output = self.build(DRY_RUN)
        ours = [w for w in warnings(output) if w.startswith(rule)]
        if database_dir_variable():
            self.assertIn(stock, output)
            self.assertEqual(ours, [], msg=output)
        else:
            self.assertNotIn(stock, output)
            self.assertEqual(len(ours), 1, msg=output)

        shutil.copy(os.path.join(self.producer, "persistent", "hashserv.db"), shared)   # the one database
        self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\nSSTATE_DIR = "%s"\n'
                      'EQUIVCACHE_MODE = "fix"\n' % shared, workdir=os.path.join(self.workdir, "fixed"))
        output = self.build(DRY_RUN)
        summary = sstate_summary(output)
        self.assertNotIn(stock, output)
        if database_dir_variable():
            self.assertIn('equivcache: EQUIVCACHE_MODE = "fix": set BB_HASHSERVE_DB_DIR = "%s" (was "")' % shared,
                          output)
            self.assertEqual([w for w in warnings(output) if w.startswith("equivcache: ")], [], msg=output)
            self.assertEqual(summary["local"], summary["wanted"], msg=output)
        else:
            self.assertEqual(len([w for w in warnings(output) if w.startswith(rule)]), 1, msg=output)
            self.assertLess(summary["local"], summary["wanted"], msg=output)

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
        """Each rule, on a real configuration parsed by bitbake, names itself with the values involved
        (a server that accepts connections and never answers included); where its message claims a cost,
        a dry run of the chain against the producer's mirror shows that cost (the audit of issue 15)."""
        closed, table = self.rule_table()
        outputs = {}
        for number, row in enumerate(table):
            with self.subTest(rule=row[0], row=number):
                self.check_rule_row(number, row, outputs)
        self.check_websockets_missing_shown(closed)
        self.check_rule_silenced_by_name()
        self.check_handler_without_server()

    def natives_miss(self, summary, output):
        missed = {"%s:%s" % (t["recipe"], t["task"]) for t in self.build_report(self.row)["misses"]["tasks"]}
        self.assertTrue({"%s:do_populate_sysroot" % pn for pn in CHAIN} <= missed, msg=output)

    def misses(self, summary, output):
        self.assertGreater(summary["missed"], 0, msg=output)

    def all_miss(self, summary, output):
        self.assertEqual((summary["mirror"], summary["missed"]), (0, summary["wanted"]), msg=output)

    def rule_table(self):
        """(an address where nothing listens, [(rule, configuration, value its message names, the cost a dry
        run shows or None, bitbake's status)])."""
        from equivcache.capabilities import stock_survives_outage
        closed = "127.0.0.1:%d" % free_port()
        listener = silent_listener()
        self.addCleanup(listener.close)
        silent = "127.0.0.1:%d" % listener.getsockname()[1]
        empty = self.start_server(address="127.0.0.1:%d" % free_port())   # a real server that knows nothing
        sstate = os.path.join(self.producer, "sstate-cache")
        lsb_dir = os.path.join(self.workdir, "other-host-mirror")
        os.makedirs(os.path.join(lsb_dir, "sstate-cache"))
        for name in os.listdir(sstate):   # the producer's objects, its native ones filed under another host
            os.symlink(os.path.join(sstate, name), os.path.join(lsb_dir, "sstate-cache", name if re.match(
                r"[0-9a-f]{2}$", name) else "fedora-40"))
        write_descriptor(lsb_dir, [self.hashserv_address], ["fedora-40"])
        file_mirror = "file://.* file://%s/sstate-cache/PATH" % lsb_dir
        equiv = 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
        upstream = 'BB_HASHSERVE_UPSTREAM = "%s"\n' % self.hashserv_address
        allow = 'SSTATE_MIRROR_ALLOW_NETWORK = "1"\n'
        mirror = allow + 'SSTATE_MIRRORS = "%s"\n' % self.sstate_mirror
        broken = equiv + upstream + allow + (
            'SSTATE_MIRRORS = "file://.* file://%s/ file://.* file:///nonexistent/sstate/PATH '
            'file://.* http://%s/sstate-cache/PATH;downloadfilename=PATH"' % (sstate, closed))

        def outage(summary, output):
            if stock_survives_outage():   # wrynose: a warning per task, then guesses saved
                self.assertGreater(len([w for w in warnings(output) if "hash equivalence" in w.lower()
                                        or closed in w]), 2, msg=output)
                self.misses(summary, output)
            else:   # scarthgap: the first question to the server ends the build, before the mirror check
                self.assertIsNone(summary, msg=output)

        return closed, [
            ("mirror-without-upstream", equiv + mirror, self.hashserv_address, None, 0),   # test_warn_seed_scenario
            ("upstream-ignored", 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "%s"\n' % empty.address
             + upstream + mirror, self.hashserv_address, self.misses, 0),
            ("upstream-unreachable", equiv + 'BB_HASHSERVE_UPSTREAM = "%s"\n' % closed + mirror, closed, self.misses,
             0),
            ("server-unreachable", 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "%s"\n' % closed + mirror,
             closed, outage, 0 if stock_survives_outage() else 1),
            ("server-unreachable", 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "%s"\n'
             'EQUIVCACHE_PROBE_TIMEOUT = "1"' % silent, "connected, but no answer within 1 s", None, 0),
            ("server-without-handler", 'BB_SIGNATURE_HANDLER = "OEBasicHash"\nBB_HASHSERVE = "auto"\n'
             'EQUIVCACHE_IGNORE = "mirror-without-equivalence"\n' + mirror, "OEBasicHash", self.misses, 0),
            ("mirror-without-equivalence", 'BB_SIGNATURE_HANDLER = "OEBasicHash"\nBB_HASHSERVE = ""\n' + mirror,
             self.hashserv_address, self.misses, 0),
            ("unknown-handler", 'BB_SIGNATURE_HANDLER = "OEEquivHsh"\nBB_HASHSERVE = "auto"\n' + mirror, "OEEquivHsh",
             self.all_miss, 1),   # noop: no task hash names the mirror's objects
            ("no-network-mirror", equiv + upstream + 'SSTATE_MIRRORS = "%s"' % self.sstate_mirror, self.mirror.url,
             None, 0),   # test_no_network_mirror_on_http
            ("mirror-syntax", equiv + upstream + 'SSTATE_MIRRORS = "%s file://.*"' % self.sstate_mirror,
             "the last one (file://.*) has no pair", None, 0),
            # Three broken mirrors in one configuration, each named by its rule: none gives an object
            # (the producer's are all below the first one's directory).
            ("mirror-syntax", broken, "without PATH", self.all_miss, 0),
            ("mirror-missing-dir", broken, "/nonexistent/sstate", None, 0),
            ("mirror-unreachable", broken, closed, None, 0),
            ("websockets-missing", 'BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "ws://%s"' % closed,
             "ws://" + closed, None, 0),
            ("descriptor-server-mismatch", equiv + 'BB_HASHSERVE_UPSTREAM = "%s"\n' % empty.address + mirror,
             self.hashserv_address, self.misses, 0),
            ("native-lsb-mismatch", equiv.replace("OEEquivHash", "EquivCacheHash") + upstream +   # it reports
             'SSTATE_MIRRORS = "%s"' % file_mirror, "fedora-40", self.natives_miss, 0),
            ("descriptor", 'EQUIVCACHE_SERVER = "http://%s"' % closed, closed, None, 0),
            (None, equiv + 'SSTATE_MIRRORS = "file://universal/(.*) file://universal-4.9/\\1"', None, None, 0),
        ]

    def check_rule_row(self, number, row, outputs):
        """One row of rule_table(): the rule names itself once, with its value; its cost, shown by a dry run."""
        from equivcache.capabilities import websockets_usable
        rule, config, value, cost, status = row
        if cost:   # a consumer of its own: no unihash or database left by another row
            self.row = os.path.join(self.workdir, "row-%d" % number)
            self.consumer(config, workdir=self.row)
            output = self.build(DRY_RUN, expect_status=status)
            if status:
                self.assertIn("ERROR:", output)
            cost(sstate_summary(output), output)
        elif config in outputs:   # a configuration already run for another rule
            output = outputs[config]
        else:
            self.consumer(config)
            output = runCmd("bitbake-getvar BB_HASHSERVE", ignore_status=True).output
        outputs[config] = output
        found = [w for w in warnings(output) if w.startswith("equivcache: ")]
        if rule is None:
            self.assertEqual(found, [], msg=output)
            return
        if rule == "websockets-missing" and websockets_usable():   # shown by check_websockets_missing_shown
            self.assertEqual([w for w in found if w.startswith("equivcache: [%s] " % rule)], [], msg=output)
            return
        named = [w for w in found if w.startswith("equivcache: [%s] " % rule)]
        self.assertEqual(len(named), 1, msg="rule %s:\n%s" % (rule, output))
        self.assertIn(value, named[0], msg=output)

    def check_websockets_missing_shown(self, closed):
        """websockets-missing, shown: bitbake's python finds a websockets older than 10 first on its path."""
        old = os.path.join(self.workdir, "old-websockets")
        os.makedirs(os.path.join(old, "websockets"), exist_ok=True)
        os.makedirs(os.path.join(old, "websockets-9.1.dist-info"), exist_ok=True)
        with open(os.path.join(old, "websockets", "__init__.py"), "w") as f:
            f.write('version = "9.1"\n')
        with open(os.path.join(old, "websockets-9.1.dist-info", "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\nName: websockets\nVersion: 9.1\n")
        self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "ws://%s"' % closed)
        fresh_bitbake_server(self.builddir)   # a bitbake server started with that path
        # bitbake cleans its environment before it starts its server: PYTHONPATH must be let through.
        passthrough = (os.environ.get("BB_ENV_PASSTHROUGH_ADDITIONS", "") + " PYTHONPATH").strip()
        result = runCmd("bitbake-getvar BB_HASHSERVE", ignore_status=True,
                        env=dict(os.environ, PYTHONPATH=old, BB_ENV_PASSTHROUGH_ADDITIONS=passthrough))
        fresh_bitbake_server(self.builddir)
        found = [w for w in warnings(result.output) if w.startswith("equivcache: [websockets-missing] ")]
        self.assertEqual(len(found), 1, msg=result.output)
        self.assertIn('BB_HASHSERVE = "ws://%s" needs the Python websockets module (10 or newer)' % closed, found[0])

    def check_rule_silenced_by_name(self):
        """A rule silenced by name says nothing; an unknown name is pointed out."""
        self.consumer('BB_SIGNATURE_HANDLER = "OEBasicHash"\nBB_HASHSERVE = "auto"\n'
                      'EQUIVCACHE_IGNORE = "server-without-handler no-such-rule"')
        result = runCmd("bitbake-getvar BB_HASHSERVE", ignore_status=True)
        found = [w for w in warnings(result.output) if w.startswith("equivcache: ")]
        self.assertEqual(len(found), 1, msg=result.output)
        self.assertIn('EQUIVCACHE_IGNORE names no rule "no-such-rule"', found[0], msg=result.output)

    def check_handler_without_server(self):
        """handler-without-server: bitbake builds the handler before any class
        sees the configuration, and OE-core's own check stops the parse."""
        self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = ""')
        result = runCmd("bitbake -e", ignore_status=True)
        self.assertNotEqual(result.status, 0, msg=result.output)
        self.assertIn("OEEquivHash requires BB_HASHSERVE to be set", result.output)
