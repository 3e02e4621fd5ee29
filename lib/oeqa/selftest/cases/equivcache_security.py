# SPDX-License-Identifier: MIT
#
# oe-selftest cases for a cache a security team signs off: served through a
# real nginx terminating TLS (a certificate from a test CA), the hash server
# over wss:// as upstream recommends, objects signed by their producer's key
# (real gpg) and verified by every consumer.
#   oe-selftest -r equivcache_security

import glob
import os
import shutil
import subprocess

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import CHAIN, SERVER, ProducerTestCase, fresh_bitbake_server
from oeqa.utils.commands import runCmd
from oeqa.utils.equivcache import (CLIENT, CacheServer, executed_tasks, free_port, listening_addresses,
                                   sstate_summary, warnings)
from oeqa.utils.equivcache_services import Nginx, gpg, kill_agents, make_key, test_ca

from equivcache import names

TAMPERED = "equivcache-c-native"


@OETestTag("meta-equivcache")
class EquivCacheSecurityTests(ProducerTestCase):
    """TLS, wss:// and signed objects, in real builds."""

    def signed_producer(self, home):
        """A copy of the shared producer's sstate, each object signed as SSTATE_SIG_KEY signs it
        (gpg --detach-sign, binary, OBJECT.sig)."""
        sstate = os.path.join(self.workdir, "producer-sstate")
        shutil.copytree(os.path.join(self.producer, "sstate-cache"), sstate)
        for rel, _, parsed in names.sstate_files(sstate):
            if parsed[3] == "object":
                path = os.path.join(sstate, rel)
                gpg(home, "--detach-sign", "-o", path + ".sig", path)
        return sstate

    def tls_environment(self, ca):
        """The test CA trusted by every client that honours SSL_CERT_FILE: the scripts, the class's
        checks, bitbake's hash server client (BB_ENV_PASSTHROUGH_ADDITIONS lets it through)."""
        saved = {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "BB_ENV_PASSTHROUGH_ADDITIONS")}

        def restore():
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.addCleanup(restore)
        os.environ["SSL_CERT_FILE"] = ca
        os.environ["BB_ENV_PASSTHROUGH_ADDITIONS"] = (saved["BB_ENV_PASSTHROUGH_ADDITIONS"] or "") + " SSL_CERT_FILE"

    def consume(self, ca, name, extra="", fresh=True):
        """A fresh consumer configured by equivcache-client from the https URL alone (and the test CA
        given to the fetcher's wget, which, built with GnuTLS on Debian, ignores SSL_CERT_FILE); its
        build output, work area and keyring."""
        workdir = os.path.join(self.workdir, name)
        keyring = os.path.join(workdir, "gnupg")
        if fresh:
            self.addCleanup(kill_agents, keyring)
        self.consumer('EQUIVCACHE_GPG_PATH = "%s"\nFETCHCMD_wget = "/usr/bin/env wget -t 2 -T 100 --ca-certificate=%s"\n%s'
                      % (keyring, ca, extra), inherit=False, workdir=workdir)
        return self.build(), workdir, keyring

    def serve_behind_nginx(self, producer_key):
        """A cache that requires signatures, its token ci-1 bound to producer_key, served on loopback
        behind nginx with TLS (a certificate from a test CA): (URL, CA, cache directory, token file)."""
        ca, cert, key = test_ca(self.workdir)
        self.tls_environment(ca)
        cache_dir = os.path.join(self.workdir, "cache")
        token = os.path.join(self.workdir, "ci-1.token")
        added = runCmd([SERVER, "token", "add", "ci-1", "--gpg-key", producer_key, cache_dir]).output
        with open(token, "w") as f:
            f.write([line for line in added.splitlines() if line.startswith("ci-1:")][0])
        port = free_port()
        url = "https://127.0.0.1:%d" % port
        server = CacheServer(cache_dir, extra=["--require-signatures", "--public-url", url], websocket=True)
        self.addCleanup(server.stop)
        site = runCmd([SERVER, "config", "--nginx", "--bind", "127.0.0.1", "--http-port", str(port), "--serve-port",
                       str(server.http_port), "--ws-port", str(server.ws_port), "--tls-cert", cert, "--tls-key", key,
                       cache_dir]).output
        nginx = Nginx(self.workdir, site, port)
        self.addCleanup(nginx.stop)
        # serve listens on loopback only: the only public listener of such a set-up is nginx's.
        listeners = listening_addresses(server.process.pid)
        self.assertEqual({a for a, _ in listeners}, {"127.0.0.1"}, msg=listeners)
        self.assertEqual({p for _, p in listeners}, {server.http_port, server.hashserv_port, server.ws_port})
        return url, ca, cache_dir, token

    def test_signed_cache_over_tls(self):
        """A cache that requires signatures, behind nginx with TLS: a producer publishes over https
        with its signed objects and equivalences (the cache merges them); a consumer set up by equivcache-client from the https URL gets 100%,
        verifying each object against the cache's key; an object tampered with on the mirror's disk is
        refused (OE-core's warning, the task is built, the build succeeds); a consumer's own objects
        are signed by its local key and restored without a warning."""
        producer_key = make_key(os.path.join(self.workdir, "producer-gnupg"), "producer")[1]
        self.addCleanup(kill_agents, os.path.join(self.workdir, "producer-gnupg"))
        sstate = self.signed_producer(os.path.join(self.workdir, "producer-gnupg"))
        url, ca, cache_dir, token = self.serve_behind_nginx(producer_key)
        fresh_bitbake_server(self.builddir)
        published = runCmd([SERVER, "publish", "--from", self.builddir, "--to", url, "--token-file", token,
                            "--sstate-dir", sstate, "--stamps-dir", glob.glob(os.path.join(self.producer, "tmp*",
                                                                                            "stamps"))[0],
                            "--hashserv-db", os.path.join(self.producer, "persistent", "hashserv.db")]).output
        wss = url.replace("https://", "wss://") + "/ws"
        self.assertIn("merged by the cache at %s for ci-1" % url, published)   # the token went to no hash server
        self.assertIn("consistent", runCmd([SERVER, "check", cache_dir]).output)

        self.assertIn("wrote conf/site.conf", runCmd([CLIENT, "--builddir", self.builddir, "--server", url]).output)
        self.addCleanup(runCmd, [CLIENT, "--builddir", self.builddir, "--remove"])
        output, _, _ = self.consume(ca, "consumer-1")
        self.assertIn('set BB_HASHSERVE_UPSTREAM = "%s"' % wss, output)
        self.assertIn('set SSTATE_VERIFY_SIG = "1"', output)
        self.assertEqual(warnings(output), [], msg=output)
        self.assert_full_match(output)
        self.assert_tampered_refused(ca, cache_dir)
        self.assert_own_objects_signed(ca)

    def assert_tampered_refused(self, ca, cache_dir):
        objects = [rel for rel, _, parsed in names.sstate_files(os.path.join(cache_dir, "sstate-cache"))
                   if parsed[3] == "object" and parsed[0] == TAMPERED and parsed[1] == "do_populate_sysroot"]
        self.assertEqual(len(objects), 1, msg=objects)
        with open(os.path.join(cache_dir, "sstate-cache", objects[0]), "r+b") as f:
            f.seek(100)
            f.write(b"tampered")
        output, _, _ = self.consume(ca, "consumer-2")
        self.assertEqual(sstate_summary(output)["missed"], 0, msg=output)
        found = warnings(output)
        # OE-core's own warning says why, and bitbake's say that the task is built instead; nothing else
        # (no equivcache warning blaming the index: the mirror did give the object).
        signature = [w for w in found if "signature" in w.lower()]
        self.assertEqual(len(signature), 1, msg=output)
        self.assertIn("%s-1.0-r0 do_populate_sysroot_setscene: Cannot verify signature on sstate package " % TAMPERED,
                      signature[0])
        self.assertIn(objects[0].rsplit("/", 1)[1], signature[0])
        self.assertEqual([w for w in found if not any(t in w for t in (
            "Cannot verify signature", "No sstate archive obtainable", "Logfile for failed setscene task",
            "%s.bb:do_populate_sysroot_setscene) failed" % TAMPERED))], [], msg=output)
        ran = {t for t in executed_tasks(output) if not t.endswith("_setscene")}
        self.assertIn("%s:do_populate_sysroot" % TAMPERED, ran, msg=output)
        self.assertFalse({t for t in ran if t.split(":")[0] in CHAIN[:2]}, msg=output)

    def assert_own_objects_signed(self, ca):
        """A consumer's own objects: signed by its local key, restored from its SSTATE_DIR without a warning."""
        output, workdir, keyring = self.consume(ca, "consumer-3", 'EQUIVCACHE_TEST_NEW_OUTPUT = "1"\n')
        built = [t for t in executed_tasks(output) if t == "equivcache-a-native:do_populate_sysroot"]
        self.assertEqual(built, ["equivcache-a-native:do_populate_sysroot"], msg=output)
        shutil.rmtree(glob.glob(os.path.join(workdir, "tmp*"))[0])
        output, _, _ = self.consume(ca, "consumer-3", 'EQUIVCACHE_TEST_NEW_OUTPUT = "1"\n', fresh=False)
        summary = sstate_summary(output)
        self.assertEqual(summary["missed"], 0, msg=output)
        self.assertGreater(summary["local"], 0, msg=output)
        self.assertEqual([t for t in executed_tasks(output) if not t.endswith("_setscene")], [], msg=output)
        self.assertEqual(warnings(output), [], msg=output)
        local = [os.path.join(workdir, "sstate-cache", rel) for rel, _, parsed in
                 names.sstate_files(os.path.join(workdir, "sstate-cache"))
                 if parsed[3] == "object" and parsed[0] == "equivcache-a-native" and parsed[1] == "do_populate_sysroot"]
        self.assertEqual(len(local), 1, msg=local)
        verified = subprocess.run(["gpg", "--homedir", keyring, "--verify", local[0] + ".sig", local[0]],
                                  capture_output=True, text=True)
        self.assertEqual(verified.returncode, 0, msg=verified.stderr)
        self.assertIn("equivcache local sstate key", verified.stderr)
