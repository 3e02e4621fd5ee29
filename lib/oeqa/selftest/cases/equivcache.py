# SPDX-License-Identifier: MIT
#
# oe-selftest cases for meta-equivcache: real builds of the offline test
# chain A <- B <- C (tests/meta-equivcache-test), against the real hash
# equivalence server. Run them with:  oe-selftest -a -t meta-equivcache

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import bb.siggen

from oeqa.core.decorator import OETestTag
from oeqa.selftest.case import OESelftestTestCase
from oeqa.utils.commands import bitbake, get_bb_var, runCmd

TARGET = "equivcache-c-native"
CHAIN = ("equivcache-a-native", "equivcache-b-native", "equivcache-c-native")
LAYERDIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))

TASK_RE = re.compile(r"^NOTE: recipe (\S+)-[^-\s]+-r\d+: task (do_\S+): Started$", re.MULTILINE)


def executed_tasks(output):
    """The "recipe:task" pairs that bitbake's output says were started."""
    return {"%s:%s" % m for m in TASK_RE.findall(output)}


def warnings(output):
    """The warnings in bitbake's output. Without a terminal, a warning can
    follow progress text on the same line ("Initialising tasks...WARNING: ...")."""
    return re.findall(r"WARNING: (.*)$", output, re.MULTILINE)


def closed_port():
    """A loopback TCP port where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HashServer:
    """A real bitbake-hashserv on a unix socket, for one test."""

    def __init__(self, directory):
        self.socket = os.path.join(directory, "hashserve.sock")
        self.address = "unix://" + self.socket
        self.log = open(os.path.join(directory, "hashserv.log"), "w")
        self.process = subprocess.Popen(
            ["bitbake-hashserv", "--bind", self.address, "--database", os.path.join(directory, "hashserv.db"),
             "--log", "INFO"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("bitbake-hashserv exited with %s" % self.process.returncode)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.socket)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("bitbake-hashserv did not listen on %s within 30 s" % self.socket)
                time.sleep(0.1)

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.log.close()


@OETestTag("meta-equivcache")
class EquivCacheHashTests(OESelftestTestCase):
    """The EquivCacheHash signature handler, in real builds."""

    def setUpLocal(self):
        super().setUpLocal()
        # Each test builds from scratch, with its own TMPDIR, sstate and
        # persistent cache (bb_unihashes.dat and the auto server's database).
        self.workdir = os.path.join(self.builddir, "ec-" + self._testMethodName.replace("test_", ""))
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)
        self.servers = []

    def tearDownLocal(self):
        for server in self.servers:
            server.kill()
        super().tearDownLocal()

    def start_server(self):
        server = HashServer(self.workdir)
        self.servers.append(server)
        return server

    def config(self, handler="EquivCacheHash", hashserve="auto", extra=""):
        w = self.workdir
        self.write_config(
            'TMPDIR = "%s/tmp"\n'
            'SSTATE_DIR = "%s/sstate-cache"\n'
            'PERSISTENT_DIR = "%s/persistent"\n'
            'BB_SIGNATURE_HANDLER = "%s"\n'
            'BB_HASHSERVE = "%s"\n'
            '%s\n' % (w, w, w, handler, hashserve, extra))

    def build(self, target=TARGET, options=""):
        result = bitbake("%s %s" % (options, target), ignore_status=True)
        self.assertEqual(result.status, 0, msg="bitbake %s %s failed:\n%s" % (options, target, result.output))
        return result.output

    def assert_one_outage_warning(self, output, address):
        found = warnings(output)
        self.assertEqual(len(found), 1, msg="expected exactly one warning, got %d:\n%s" % (len(found), output))
        self.assertIn("Summary: There was 1 WARNING message.", output, msg=output)
        self.assertIn("EquivCacheHash: the hash equivalence server", found[0], msg=output)
        self.assertIn('BB_HASHSERVE = "%s"' % address, found[0], msg=output)
        self.assertNotIn("Traceback", output, msg=output)

    def signatures(self, stamps):
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

    def test_same_signatures(self):
        """Adding the layer changes no signature, and EquivCacheHash computes OEEquivHash's signatures."""
        runs = {}
        layer_removed = 'BBLAYERS:remove = "%s"\n' % LAYERDIR
        for name, handler, bblayers in (
                ("without-layer", "OEEquivHash", layer_removed),
                ("oeequivhash", "OEEquivHash", ""),
                ("equivcachehash", "EquivCacheHash", "")):
            self.write_bblayers_config(bblayers)
            stamps = os.path.join(self.workdir, "stamps-" + name)
            self.config(handler=handler, extra='STAMPS_DIR = "%s"' % stamps)
            output = self.build(options="-S none")
            self.assertNotIn("Invalid signature generator", output, msg=output)
            runs[name] = self.signatures(stamps)
            self.assertIn("equivcache-a-native:do_populate_sysroot", runs[name], msg="no signatures written by %s:\n%s" % (name, output))
        self.assertEqual(runs["without-layer"], runs["oeequivhash"], msg="adding meta-equivcache changed signatures")
        self.assertEqual(runs["oeequivhash"], runs["equivcachehash"], msg="EquivCacheHash and OEEquivHash disagree")

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
        address = "127.0.0.1:%d" % closed_port()
        self.config(hashserve=address)
        output = self.build()
        self.assert_one_outage_warning(output, address)

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
        self.config(hashserve=server.address, extra='EQUIVCACHE_TEST_KILL_PID = "%d"' % server.process.pid)
        output = self.build()
        self.assertIsNotNone(server.process.poll(), msg="the server survived the build:\n%s" % output)
        self.assert_one_outage_warning(output, server.address)
        self.assertIn("reporting", warnings(output)[0], msg=output)

    def test_yocto_check_layer(self):
        """yocto-check-layer passes, the signature check of a software layer included."""
        builddir = os.path.join(self.workdir, "check-build")
        corebase = get_bb_var("COREBASE")
        runCmd("bash -c '. %s/oe-init-build-env %s'" % (corebase, builddir))
        with open(os.path.join(builddir, "conf", "local.conf"), "a") as f:
            f.write('\nMACHINE = "qemux86-64"\nDISTRO = "nodistro"\nBB_NO_NETWORK = "1"\n'
                    'SSTATE_DIR = "%s/sstate-cache"\n' % self.workdir)
        with open(os.path.join(builddir, "conf", "bblayers.conf"), "w") as f:
            f.write('POKY_BBLAYERS_CONF_VERSION = "2"\nBBPATH = "${TOPDIR}"\nBBFILES ?= ""\n'
                    'BBLAYERS ?= "%s/meta"\n' % corebase)
        result = runCmd("bash -c '. %s/oe-init-build-env %s >/dev/null && yocto-check-layer --no-auto "
                        "--with-software-layer-signature-check %s'" % (corebase, builddir, LAYERDIR),
                        ignore_status=True)
        with open(os.path.join(self.workdir, "yocto-check-layer.log"), "w") as f:
            f.write(result.output)
        self.assertEqual(result.status, 0, msg="yocto-check-layer failed:\n%s" % result.output)
        self.assertNotIn("Not testing for signature changes", result.output, msg=result.output)
        self.assertIn("meta-equivcache", result.output, msg=result.output)
        self.assertIn("PASS", result.output, msg=result.output)
