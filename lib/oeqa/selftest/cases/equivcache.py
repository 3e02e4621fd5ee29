# SPDX-License-Identifier: MIT
#
# oe-selftest cases for meta-equivcache: real builds of the offline test
# chain A <- B <- C (tests/meta-equivcache-test), against the real hash
# equivalence server. Run them with:  oe-selftest -a -t meta-equivcache

import fcntl
import glob
import http.server
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import bb.siggen

from oeqa.core.decorator import OETestTag
from oeqa.selftest.case import OESelftestTestCase
from oeqa.utils import ftools
from oeqa.utils.commands import bitbake, get_bb_var, runCmd

TARGET = "equivcache-c-native"
CHAIN = ("equivcache-a-native", "equivcache-b-native", "equivcache-c-native")
LAYERDIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))

sys.path.insert(0, os.path.join(LAYERDIR, "tests"))
from equivcache_support import CLIENT, DOCTOR, SERVER, CacheServer, PostgreSQL, free_port  # noqa: E402

TASK_RE = re.compile(r"^NOTE: recipe (\S+)-[^-\s]+-r\d+: task (do_\S+): Started$", re.MULTILINE)


def executed_tasks(output):
    """The "recipe:task" pairs that bitbake's output says were started."""
    return {"%s:%s" % m for m in TASK_RE.findall(output)}


def warnings(output):
    """The warnings in bitbake's output. Without a terminal, a warning can
    follow progress text on the same line ("Initialising tasks...WARNING: ...")."""
    return re.findall(r"WARNING: (.*)$", output, re.MULTILINE)


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


def sstate_summary(output):
    """(wanted, mirrors, missed) from bitbake's "Sstate summary" line."""
    m = re.search(r"Sstate summary: Wanted (\d+) Local \d+ Mirrors (\d+) Missed (\d+)", output)
    return tuple(int(g) for g in m.groups()) if m else None


def full_sstate_summary(output):
    """{"wanted", "local", "mirror", "missed"} from bitbake's "Sstate summary" line."""
    m = re.search(r"Sstate summary: Wanted (\d+) Local (\d+) Mirrors (\d+) Missed (\d+)", output)
    return dict(zip(("wanted", "local", "mirror", "missed"), map(int, m.groups()))) if m else None


def tasks_summary(output):
    """(attempted, not rerun) from bitbake's "Tasks Summary" line."""
    m = re.search(r"Tasks Summary: Attempted (\d+) tasks of which (\d+) didn't need to be rerun", output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def fresh_bitbake_server(builddir, deadline=60):
    """Stop any bitbake server of this build directory and wait until it is
    gone. A command that starts while the previous one's server is still
    exiting reuses that server ("Reconnecting to bitbake server..."), and a
    cooker keeps the auto hash equivalence server it started first: a new
    BB_HASHSERVE_UPSTREAM or PERSISTENT_DIR would be ignored."""
    runCmd("bitbake -m", ignore_status=True)
    lockfile = os.path.join(builddir, "bitbake.lock")
    end = time.monotonic() + deadline
    while os.path.exists(lockfile):
        try:
            with open(lockfile, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            return
        except OSError:
            if time.monotonic() > end:
                raise AssertionError("the bitbake server of %s did not exit within %d s" % (builddir, deadline))
            time.sleep(0.1)


class HashServer:
    """A real bitbake-hashserv for one test: on a unix socket in `directory`,
    or on a loopback TCP address; read-only if asked."""

    def __init__(self, directory, address=None, database=None, read_only=False):
        self.socket = os.path.join(directory, "hashserve.sock")
        self.address = address or "unix://" + self.socket
        self.log = open(os.path.join(directory, "hashserv.log"), "a")
        command = ["bitbake-hashserv", "--bind", self.address, "--log", "INFO",
                   "--database", database or os.path.join(directory, "hashserv.db")]
        if read_only:
            command.append("--read-only")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("bitbake-hashserv exited with %s" % self.process.returncode)
            try:
                if address:
                    host, port = address.rsplit(":", 1)
                    socket.create_connection((host, int(port)), timeout=1).close()
                else:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.connect(self.socket)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("bitbake-hashserv did not listen on %s within 30 s" % self.address)
                time.sleep(0.1)

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.log.close()


class HttpMirror:
    """A real http server on loopback, serving a directory read-only."""

    def __init__(self, directory):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=directory, **kwargs)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
        fresh_bitbake_server(self.builddir)
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
            # One stamps directory, emptied before each run: STAMPS_DIR is
            # not part of the configuration hash, so a cached parse keeps it.
            stamps = os.path.join(self.workdir, "stamps")
            shutil.rmtree(stamps, ignore_errors=True)
            self.config(handler=handler, extra='STAMPS_DIR = "%s"' % stamps)
            output = self.build(options="-S none")
            self.assertNotIn("Invalid signature generator", output, msg=output)
            runs[name] = signatures(stamps)
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
        address = "127.0.0.1:%d" % free_port()
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


def write_descriptor(directory, hashserv, nativelsbstrings, sstate="sstate-cache"):
    doc = {
        "format": "equivcache-descriptor", "version": 1, "generated": "2026-01-01T00:00:00Z",
        "hashserv": hashserv, "sstate": sstate, "downloads": "", "nativelsbstrings": nativelsbstrings,
        "producer": {"DISTRO": "nodistro", "MACHINE": "qemux86-64", "layers": []},
    }
    with open(os.path.join(directory, "equivcache.json"), "w") as f:
        json.dump(doc, f)


def database_rows(path):
    """{table: rows} of a hashserv SQLite database (read while its server runs)."""
    with sqlite3.connect("file:%s?mode=ro" % path, uri=True) as db:
        return {t: db.execute("SELECT COUNT(*) FROM %s" % t).fetchone()[0] for t in ("outhashes_v2", "unihashes_v3")}


@OETestTag("meta-equivcache")
class EquivCacheClassTests(OESelftestTestCase):
    """equivcache.bbclass on the seed's scenario: a producer with an
    equivalent change, its sstate served over http and its database by a
    read-only bitbake-hashserv, and consumers configured in every way."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.producer = os.path.join(cls.builddir, "ec-producer")
        shutil.rmtree(cls.producer, ignore_errors=True)
        os.makedirs(cls.producer)
        base = ('TMPDIR = "{p}/tmp"\nSSTATE_DIR = "{p}/sstate-cache"\nPERSISTENT_DIR = "{p}/persistent"\n'
                'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n').format(p=cls.producer)
        ftools.write_file(cls.testinc_path, base)
        for extra in ("", 'EQUIVCACHE_TEST_SAME_OUTPUT = "1"\n'):
            ftools.write_file(cls.testinc_path, base + extra)
            fresh_bitbake_server(cls.builddir)
            result = bitbake(TARGET, ignore_status=True)
            if result.status:
                raise AssertionError("producer build failed:\n%s" % result.output)
        ran = executed_tasks(result.output)
        if "equivcache-a-native:do_compile" not in ran or "equivcache-b-native:do_compile" in ran:
            raise AssertionError("the producer's equivalent change did not work as expected:\n%s" % result.output)
        os.remove(cls.testinc_path)

        cls.mirror = HttpMirror(cls.producer)
        cls.hashserv_address = "127.0.0.1:%d" % free_port()
        cls.hashserv = HashServer(cls.producer, address=cls.hashserv_address, read_only=True,
                                  database=os.path.join(cls.producer, "persistent", "hashserv.db"))
        lsbs = sorted(os.listdir(os.path.join(cls.producer, "sstate-cache")))
        write_descriptor(cls.producer, [cls.hashserv_address], [d for d in lsbs if not d.startswith(".")])
        cls.sstate_mirror = "file://.* %s/sstate-cache/PATH;downloadfilename=PATH" % cls.mirror.url

    @classmethod
    def tearDownClass(cls):
        cls.hashserv.kill()
        cls.mirror.close()
        super().tearDownClass()

    def setUpLocal(self):
        super().setUpLocal()
        self.workdir = os.path.join(self.builddir, "ec-" + self._testMethodName.replace("test_", ""))
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)

    def consumer(self, extra, inherit=True, workdir=None):
        """A fresh consumer with the producer's metadata (the equivalent change included)."""
        self.write_config(
            'TMPDIR = "{w}/tmp"\nSSTATE_DIR = "{w}/sstate-cache"\nPERSISTENT_DIR = "{w}/persistent"\n'
            'EQUIVCACHE_TEST_SAME_OUTPUT = "1"\n{inherit}{extra}\n'.format(
                w=workdir or self.workdir, inherit='INHERIT += "equivcache"\n' if inherit else "", extra=extra))

    def build(self, options="", expect_status=0):
        fresh_bitbake_server(self.builddir)
        result = bitbake("%s %s" % (options, TARGET), ignore_status=True)
        self.assertEqual(result.status, expect_status, msg="bitbake %s %s: status %d\n%s"
                         % (options, TARGET, result.status, result.output))
        return result.output

    def assert_full_match(self, output):
        wanted, mirrors, missed = sstate_summary(output)
        self.assertEqual((mirrors, missed), (wanted, 0), msg="not a 100%% mirror match:\n%s" % output)
        real = [t for t in executed_tasks(output) if not t.endswith("_setscene")]
        self.assertEqual(real, [], msg="tasks ran instead of coming from the mirror:\n%s" % output)

    def test_warn_seed_scenario(self):
        """SSTATE_MIRRORS only (the seed's setup): rule mirror-without-upstream, once, and real misses."""
        self.consumer('BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                      'SSTATE_MIRRORS = "%s"\nSSTATE_MIRROR_ALLOW_NETWORK = "1"\n' % self.sstate_mirror)
        output = self.build()
        found = [w for w in warnings(output) if w.startswith("equivcache: ")]
        self.assertEqual(len(found), 1, msg=output)
        self.assertIn("[mirror-without-upstream]", found[0], msg=output)
        self.assertIn('Set BB_HASHSERVE_UPSTREAM = "%s"' % self.hashserv_address, found[0], msg=output)
        wanted, mirrors, missed = sstate_summary(output)
        self.assertGreater(missed, 0, msg="the seed's scenario should miss:\n%s" % output)
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

    def test_server_alone(self):
        """EQUIVCACHE_SERVER alone configures a consumer: 100% match."""
        self.consumer('EQUIVCACHE_SERVER = "%s"\n' % self.mirror.url)
        output = self.build()
        self.assertIn('set BB_SIGNATURE_HANDLER = "EquivCacheHash" (was "OEBasicHash")', output)
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
            stamps = os.path.join(self.workdir, "stamps")
            shutil.rmtree(stamps, ignore_errors=True)
            self.consumer('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\nSTAMPS_DIR = "%s"\n%s\n'
                          % (stamps, extra or ""), inherit=extra is not None)
            output = self.build(options="-S none")
            self.assertEqual([w for w in warnings(output) if w.startswith("equivcache: ")], [], msg=output)
            runs[name] = signatures(stamps)
            self.assertIn("equivcache-a-native:do_populate_sysroot", runs[name], msg=output)
        for name in ("warn", "fix", "fatal"):
            self.assertEqual(runs["without"], runs[name], msg="EQUIVCACHE_MODE = %s changed signatures" % name)

    def test_rules_on_real_configurations(self):
        """Each rule, on a real configuration parsed by bitbake, names itself with the values involved."""
        import importlib.util
        closed = "127.0.0.1:%d" % free_port()
        lsb_dir = os.path.join(self.workdir, "other-host-mirror")
        os.makedirs(os.path.join(lsb_dir, "sstate-cache"))
        write_descriptor(lsb_dir, [self.hashserv_address], ["fedora-40"])
        file_mirror = "file://.* file://%s/sstate-cache/PATH" % lsb_dir
        equiv = 'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
        upstream = 'BB_HASHSERVE_UPSTREAM = "%s"\n' % self.hashserv_address
        allow = 'SSTATE_MIRROR_ALLOW_NETWORK = "1"\n'
        websockets = importlib.util.find_spec("websockets") is not None
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
            ("mirror-syntax", equiv + upstream + 'SSTATE_MIRRORS = "file://.* %s/sstate-cache/PATH"' % self.mirror.url,
             "downloadfilename"),
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


    # equivcache-server and equivcache-client end to end (issue 4): the
    # producer's build published, served, and consumed by a fresh build
    # directory configured from the server's URL alone.

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


    # The build report and equivcache-doctor (issue 5), on a published cache.

    def build_report(self, workdir=None):
        """The newest build report of a consumer (TMPDIR is tmp + TCLIBCAPPEND)."""
        paths = glob.glob(os.path.join(workdir or self.workdir, "tmp*", "log", "equivcache", "latest.json"))
        self.assertEqual(len(paths), 1, msg="no single build report: %s" % paths)
        with open(paths[0]) as f:
            return json.load(f)

    def assert_report_matches_bitbake(self, output, report):
        """The report's numbers are bitbake's own: its Sstate summary and Tasks Summary."""
        self.assertEqual({k: report["setscene"][k] for k in ("wanted", "local", "mirror", "missed")},
                         full_sstate_summary(output), msg=output)
        attempted, not_rerun = tasks_summary(output)
        self.assertEqual(report["tasks"]["run"] + report["tasks"]["noexec"], attempted - not_rerun, msg=output)
        self.assertEqual(report["tasks"]["run"], len([t for t in executed_tasks(output)
                                                      if not t.endswith("_setscene")]), msg=output)
        self.assertEqual(len(report["misses"]["tasks"]), report["setscene"]["missed"], msg=report)
        line = [l for l in output.splitlines() if l.startswith("equivcache: setscene ")]
        self.assertEqual(len(line), 1, msg=output)
        self.assertIn("%d wanted: %d local, %d mirror" % (report["setscene"]["wanted"], report["setscene"]["local"],
                                                         report["setscene"]["mirror"]), line[0])

    def test_report_seed_scenario(self):
        """The build report in the seed's scenario: mirror without upstream (misses), then with it (100%)."""
        cache_dir, server, _ = self.publish_and_serve("cache")
        mirror = "file://.* %s/sstate-cache/PATH;downloadfilename=PATH" % server.url
        base = ('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\n'
                'SSTATE_MIRRORS = "%s"\nSSTATE_MIRROR_ALLOW_NETWORK = "1"\n' % mirror)

        partial = os.path.join(self.workdir, "partial")
        self.consumer(base, workdir=partial)
        output = self.build()
        report = self.build_report(partial)
        self.assert_report_matches_bitbake(output, report)
        self.assertGreater(report["setscene"]["missed"], 0, msg=output)
        self.assertGreater(report["setscene"]["mirror"], 0, msg=output)
        # Every miss is on the mirror under the unihash the producer's server knows.
        self.assertEqual(report["misses"]["index"], server.url + "/index.json")
        self.assertEqual({t["class"] for t in report["misses"]["tasks"]}, {"other-unihash"}, msg=report)
        self.assertEqual(report["misses"]["counts"]["other-unihash"], report["setscene"]["missed"])
        self.assertTrue(all(t["mirror_unihashes"] for t in report["misses"]["tasks"]), msg=report)
        self.assertIn("equivcache-a-native:do_populate_sysroot",
                      ["%s:%s" % (t["recipe"], t["task"]) for t in report["misses"]["tasks"]])
        self.assertEqual(report["hashserv"]["equivalent"], 0, msg=report)
        self.assertEqual(report["hashserv"]["errors"], 0, msg=report)
        self.assertGreater(report["downloads"]["objects"], 0, msg=report)
        self.assertGreater(report["downloads"]["bytes"], 0, msg=report)

        full = os.path.join(self.workdir, "full")
        self.consumer(base + 'BB_HASHSERVE_UPSTREAM = "%s"\n' % server.hashserv, workdir=full)
        output = self.build()
        report = self.build_report(full)
        self.assert_report_matches_bitbake(output, report)
        self.assertEqual(report["setscene"]["missed"], 0, msg=output)
        self.assertEqual(report["setscene"]["mirror"], report["setscene"]["wanted"], msg=output)
        self.assertEqual(report["tasks"]["run"], 0, msg=output)
        self.assertEqual(report["misses"]["tasks"], [])
        # The equivalent change: the upstream answers A's new task hashes with the old unihashes.
        self.assertGreater(report["hashserv"]["equivalent"], 0, msg=report)
        self.assertGreater(report["hashserv"]["queries"], report["hashserv"]["equivalent"], msg=report)
        self.assertGreater(report["downloads"]["bytes"], 0, msg=report)

    def doctor(self, *targets):
        fresh_bitbake_server(self.builddir)
        result = runCmd([DOCTOR, "--json"] + list(targets or [TARGET]), ignore_status=True, stderr=subprocess.PIPE)
        self.assertEqual(result.status, 0, msg="%s\n%s" % (result.output, result.error))
        return json.loads(result.output)

    def differing_tasks(self, base, drift):
        """The chain's "recipe:task"s whose task hash the drift changes, by bitbake -S none."""
        sigs = []
        for extra in ("", drift):
            # A directory of its own for each run: signatures() reads every sigdata file there.
            stamps = os.path.join(self.workdir, "stamps-%d" % len(glob.glob(os.path.join(self.workdir, "stamps-*"))))
            # STAMPS_DIR is not part of the configuration hash: a parse cached
            # under an otherwise equal configuration would keep the old
            # stamps (and so would the doctor's). EQUIVCACHE_TEST_PARSE,
            # which no task reads, gives each run its own parse.
            self.consumer(base + 'STAMPS_DIR = "%s"\nEQUIVCACHE_TEST_PARSE = "%s"\n' % (stamps, stamps) + extra)
            self.build(options="-S none")
            sigs.append(signatures(stamps))
        return {k for k in sigs[0] if sigs[0][k][0] != sigs[1].get(k, (None,))[0]}

    def test_doctor_names_drift(self):
        """One drift in A: the report's misses, and the doctor names the variable, its values and its cost."""
        cache_dir, server, output = self.publish_and_serve("cache")
        self.assertRegex(output, r"signatures: [1-9]\d* files copied")
        base = 'EQUIVCACHE_SERVER = "%s"\n' % server.url
        drift_a = 'EQUIVCACHE_TEST_NEW_OUTPUT = "1"\n'
        drift_c = 'EQUIVCACHE_TEST_C_OUTPUT = "1"\n'
        cost_a = self.differing_tasks(base, drift_a)
        cost_c = self.differing_tasks(base, drift_c)
        self.assertIn("equivcache-a-native:do_compile", cost_a)
        self.assertIn("equivcache-c-native:do_populate_sysroot", cost_c)
        self.assertGreater(len(cost_a), len(cost_c))

        self.consumer(base + drift_a)
        fresh_bitbake_server(self.builddir)
        stamps = get_bb_var("STAMPS_DIR")
        before = sorted(glob.glob(os.path.join(stamps, "**", "*.sigdata.*"), recursive=True))
        diagnosis = self.doctor()
        self.assertEqual(sorted(glob.glob(os.path.join(stamps, "**", "*.sigdata.*"), recursive=True)), before,
                         msg="equivcache-doctor left signature files behind")
        self.assertEqual(diagnosis["index"], server.url + "/index.json")
        self.assertEqual(len(diagnosis["causes"]), 1, msg=diagnosis)
        cause = diagnosis["causes"][0]
        self.assertEqual((cause["kind"], cause["name"], cause["mirror"], cause["local"]),
                         ("variable", "EQUIVCACHE_TEST_NEW_OUTPUT", "0", "1"), msg=cause)
        self.assertEqual(cause["roots"][0], "equivcache-a-native:do_compile", msg=cause)
        self.assertEqual(cause["tasks"], len(cost_a), msg="%s\n%s" % (cause, sorted(cost_a)))
        self.assertIn("Variable EQUIVCACHE_TEST_NEW_OUTPUT value changed from '0' to '1'", cause["bitbake"])
        human = runCmd([DOCTOR, TARGET]).output
        self.assertIn('EQUIVCACHE_TEST_NEW_OUTPUT differs (yours "1", the mirror\'s "0"): %d tasks' % len(cost_a),
                      human)
        self.assertIn("root equivcache-a-native:do_compile", human)

        # The build: the setscene tasks the drift changes miss, on the mirror under another unihash.
        output = self.build()
        report = self.build_report()
        self.assert_report_matches_bitbake(output, report)
        missed = {"%s:%s" % (t["recipe"], t["task"]) for t in report["misses"]["tasks"]}
        self.assertEqual(len(missed), cause["setscene_tasks"], msg="%s\n%s" % (sorted(missed), cause))
        self.assertTrue(missed <= cost_a, msg=sorted(missed))
        self.assertEqual({t["class"] for t in report["misses"]["tasks"]}, {"other-unihash"}, msg=report)

        # Two drifts: ranked by cost, A's first.
        self.consumer(base + drift_a + drift_c)
        causes = self.doctor()["causes"]
        self.assertEqual([(c["name"], c["tasks"]) for c in causes],
                         [("EQUIVCACHE_TEST_NEW_OUTPUT", len(cost_a)), ("EQUIVCACHE_TEST_C_OUTPUT", len(cost_c))],
                         msg=causes)
        self.assertEqual(causes[1]["roots"][0], "equivcache-c-native:do_compile", msg=causes)
