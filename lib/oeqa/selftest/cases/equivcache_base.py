# SPDX-License-Identifier: MIT
#
# Shared set-up of meta-equivcache's oe-selftest cases (the modules
# equivcache_*.py beside this one): a fresh work area per test, builds of
# the offline test chain A <- B <- C (tests/meta-equivcache-test), and one
# producer per oe-selftest run, built once and read by every case that
# consumes its cache. The selftest build directory masks every recipe but
# the chain's (tests/run), so a fresh configuration parses in a second.

import glob
import json
import os
import pkgutil
import re
import shutil
import sys

import bb.siggen
import oeqa.utils

from oeqa.selftest.case import OESelftestTestCase
from oeqa.utils import ftools
from oeqa.utils.commands import bitbake, runCmd

# oe-selftest imports the test modules before it puts the layers' lib/ on
# sys.path, and imported oeqa.utils before that: put this layer's lib/
# there, and let oeqa.utils find its lib/oeqa/utils too.
LAYERLIB = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if LAYERLIB not in sys.path:
    sys.path.append(LAYERLIB)
oeqa.utils.__path__ = pkgutil.extend_path(oeqa.utils.__path__, oeqa.utils.__name__)

from equivcache import buildlock  # noqa: E402
from oeqa.utils.equivcache import (CLIENT, SERVER, CacheServer, HashServer, executed_tasks,  # noqa: E402
                                   sstate_summary, tasks_summary)

TARGET = "equivcache-c-native"
# A dry run up to bitbake's mirror availability check: its Sstate summary and
# the class's build report, without dry-running the 39 tasks (2 s less).
DRY_RUN = "-n --setscene-only"
CHAIN = ("equivcache-a-native", "equivcache-b-native", "equivcache-c-native")


def fresh_bitbake_server(builddir):
    """Stop any bitbake server of this build directory and wait until it is
    gone: a cooker keeps the auto hash equivalence server it started first,
    so a new BB_HASHSERVE_UPSTREAM or PERSISTENT_DIR would be ignored.
    A server done with its command exits by itself, sooner when woken
    (buildlock.wait_for_server_exit); only one that stays (BB_SERVER_TIMEOUT)
    is stopped with `bitbake -m`, which costs a bitbake start-up."""
    if not buildlock.server_running(builddir):
        return
    try:
        buildlock.wait_for_server_exit(builddir, deadline=3)
        return
    except TimeoutError:
        pass
    runCmd("bitbake -m", ignore_status=True)
    try:
        buildlock.wait_for_server_exit(builddir)
    except TimeoutError as e:
        raise AssertionError(str(e))


def signatures(stamps):
    """{"recipe:task": (task hash, unihash)} of the chain, from the sigdata that -S none wrote."""
    sigs = {}
    for pn in CHAIN:
        for path in glob.glob(os.path.join(stamps, "*", pn, "*.sigdata.*")):
            name = os.path.basename(path)
            task = re.search(r"\.(do_[^.]+)\.sigdata\.", name).group(1)
            unihash = name.rsplit(".", 1)[1]
            computed = [line for line in bb.siggen.dump_sigfile(path) if line.startswith("Computed task hash is ")]
            sigs["%s:%s" % (pn, task)] = (computed[0].split()[-1], unihash)
    return sigs


class EquivCacheTestCase(OESelftestTestCase):
    """Each test gets its own work area (TMPDIR, sstate, persistent cache)
    under the build directory, and builds the chain with a fresh bitbake
    server."""

    def setUpLocal(self):
        super().setUpLocal()
        self.workdir = os.path.join(self.builddir, "ec-" + self._testMethodName.replace("test_", ""))
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)

    def config(self, handler="EquivCacheHash", hashserve="auto", extra=""):
        """The chain built in this test's work area with `handler` and `BB_HASHSERVE`."""
        self.write_config(self.config_text(handler, hashserve, extra))

    def config_text(self, handler="EquivCacheHash", hashserve="auto", extra=""):
        return ('TMPDIR = "{w}/tmp"\nSSTATE_DIR = "{w}/sstate-cache"\nPERSISTENT_DIR = "{w}/persistent"\n'
                'BB_SIGNATURE_HANDLER = "{h}"\nBB_HASHSERVE = "{s}"\n{e}\n').format(
                    w=self.workdir, h=handler, s=hashserve, e=extra)

    def start_server(self, **kwargs):
        """A real bitbake-hashserv for this test, stopped after it."""
        server = HashServer(self.workdir, **kwargs)
        self.addCleanup(server.kill)
        return server

    def build(self, options="", target=TARGET, expect_status=0):
        fresh_bitbake_server(self.builddir)
        result = bitbake("%s %s" % (options, target), ignore_status=True)
        self.assertEqual(result.status, expect_status, msg="bitbake %s %s: status %d\n%s"
                         % (options, target, result.status, result.output))
        return result.output

    def signatures_of(self, config, stamps):
        """The chain's signatures by `bitbake -S none` under `config`, in a
        stamps directory of their own. STAMPS_DIR is not part of the
        configuration hash, so a parse cached under an otherwise equal
        configuration would keep old stamp paths: EQUIVCACHE_TEST_PARSE,
        which no task reads, gives each run its own parse."""
        shutil.rmtree(stamps, ignore_errors=True)
        self.write_config(config + '\nSTAMPS_DIR = "%s"\nEQUIVCACHE_TEST_PARSE = "%s"\n' % (stamps, stamps))
        output = self.build(options="-S none")
        self.assertNotIn("Invalid signature generator", output, msg=output)
        sigs = signatures(stamps)
        self.assertIn("equivcache-a-native:do_populate_sysroot", sigs, msg="no signatures written:\n%s" % output)
        return sigs, output


_producer = {}


def producer(builddir, testinc_path):
    """The producer of the seed's scenario, built once per oe-selftest run:
    the chain with OEEquivHash and an auto server, then an equivalent change
    in A (EQUIVCACHE_TEST_SAME_OUTPUT): A reruns, B and C do not. Its
    directory holds tmp/ (with buildstats: publish times each object's
    task from them), sstate-cache/ and persistent/hashserv.db."""
    directory = os.path.join(builddir, "ec-producer")
    if _producer.get("dir") == directory:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    base = ('TMPDIR = "{p}/tmp"\nSSTATE_DIR = "{p}/sstate-cache"\nPERSISTENT_DIR = "{p}/persistent"\n'
            'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\nUSER_CLASSES += "buildstats"\n').format(
                p=directory)
    for extra in ("", 'EQUIVCACHE_TEST_SAME_OUTPUT = "1"\n'):
        ftools.write_file(testinc_path, base + extra)
        fresh_bitbake_server(builddir)
        result = bitbake(TARGET, ignore_status=True)
        if result.status:
            raise AssertionError("producer build failed:\n%s" % result.output)
    os.remove(testinc_path)
    ran = executed_tasks(result.output)
    if "equivcache-a-native:do_compile" not in ran or "equivcache-b-native:do_compile" in ran:
        raise AssertionError("the producer's equivalent change did not work as expected:\n%s" % result.output)
    _producer["dir"] = directory
    return directory


def write_descriptor(directory, hashserv, nativelsbstrings, sstate="sstate-cache"):
    doc = {
        "format": "equivcache-descriptor", "version": 1, "generated": "2026-01-01T00:00:00Z",
        "hashserv": hashserv, "sstate": sstate, "downloads": "", "nativelsbstrings": nativelsbstrings,
        "producer": {"DISTRO": "nodistro", "MACHINE": "qemux86-64", "layers": []},
    }
    with open(os.path.join(directory, "equivcache.json"), "w") as f:
        json.dump(doc, f)


class ProducerTestCase(EquivCacheTestCase):
    """Consumers of the shared producer, directly or through a cache that
    equivcache-server publishes from it and serves."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.producer = producer(cls.builddir, cls.testinc_path)

    def consumer(self, extra, inherit=True, workdir=None):
        """A fresh consumer with the producer's metadata (the equivalent change included)."""
        self.write_config(self.consumer_text(extra, inherit, workdir))

    def consumer_text(self, extra, inherit=True, workdir=None):
        return (
            'TMPDIR = "{w}/tmp"\nSSTATE_DIR = "{w}/sstate-cache"\nPERSISTENT_DIR = "{w}/persistent"\n'
            'EQUIVCACHE_TEST_SAME_OUTPUT = "1"\n{inherit}{extra}\n'.format(
                w=workdir or self.workdir, inherit='INHERIT += "equivcache"\n' if inherit else "", extra=extra))

    def assert_full_match(self, output):
        summary = sstate_summary(output)
        self.assertEqual((summary["mirror"], summary["missed"]), (summary["wanted"], 0),
                         msg="not a 100%% mirror match:\n%s" % output)
        real = [t for t in executed_tasks(output) if not t.endswith("_setscene")]
        self.assertEqual(real, [], msg="tasks ran instead of coming from the mirror:\n%s" % output)

    # equivcache-server and equivcache-client: the producer published,
    # served, and consumed by a build directory configured from its URL.

    def publish_and_serve(self, name, database=None):
        cache_dir = os.path.join(self.workdir, name)
        command = [SERVER, "publish", "--from", self.producer,
                   "--hashserv-db", os.path.join(self.producer, "persistent", "hashserv.db"), cache_dir]
        if database:
            command[2:2] = ["--database", database]
        result = runCmd(command)
        server = CacheServer(cache_dir)
        self.addCleanup(server.stop)
        return cache_dir, server, result.output

    def configure_client(self, url):
        result = runCmd([CLIENT, "--builddir", self.builddir, "--server", url])
        self.addCleanup(runCmd, [CLIENT, "--builddir", self.builddir, "--remove"])
        return result.output

    def build_report(self, workdir=None):
        """The newest build report of a consumer (TMPDIR is tmp + TCLIBCAPPEND)."""
        paths = glob.glob(os.path.join(workdir or self.workdir, "tmp*", "log", "equivcache", "latest.json"))
        self.assertEqual(len(paths), 1, msg="no single build report: %s" % paths)
        with open(paths[0]) as f:
            return json.load(f)

    def assert_report_matches_bitbake(self, output, report):
        """The report's numbers are bitbake's own: its Sstate summary and Tasks Summary."""
        self.assertEqual({k: report["setscene"][k] for k in ("wanted", "local", "mirror", "missed")},
                         sstate_summary(output), msg=output)
        attempted, not_rerun = tasks_summary(output)
        self.assertEqual(report["tasks"]["run"] + report["tasks"]["noexec"], attempted - not_rerun, msg=output)
        self.assertEqual(report["tasks"]["run"], len([t for t in executed_tasks(output)
                                                      if not t.endswith("_setscene")]), msg=output)
        self.assertEqual(len(report["misses"]["tasks"]), report["setscene"]["missed"], msg=report)
        line = [l for l in output.splitlines() if l.startswith("equivcache: setscene ")]
        self.assertEqual(len(line), 1, msg=output)
        self.assertIn("%d wanted: %d local, %d mirror" % (report["setscene"]["wanted"], report["setscene"]["local"],
                                                         report["setscene"]["mirror"]), line[0])
