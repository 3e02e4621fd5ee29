# SPDX-License-Identifier: MIT
#
# oe-selftest case for several equivcache-server serve replicas of one
# cache: behind a real nginx, over one bucket (a real Ceph RADOS Gateway)
# and one PostgreSQL holding the cache's whole state; a replica killed.
#   oe-selftest -r equivcache_replicas

import glob
import json
import os
import subprocess

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import SERVER, ProducerTestCase, fresh_bitbake_server
from oeqa.utils.commands import runCmd
from oeqa.utils.equivcache import CacheServer, free_port, wait_for, warnings
from oeqa.utils.equivcache_services import CephRGW, Nginx, PostgreSQL


@OETestTag("meta-equivcache")
class EquivCacheReplicaTests(ProducerTestCase):
    """serve replicas over one bucket and one PostgreSQL, in real builds."""

    def test_replicas_over_a_bucket(self):
        """Two serve replicas behind nginx over one bucket (a real Ceph RADOS Gateway) and one PostgreSQL
        holding every state: two producers publish through nginx at once (requests on both replicas), one
        replica SIGKILLed during their uploads, gc through the other's state directory meanwhile; the
        publishes complete, check is consistent, and a consumer configured from the bucket's URL alone
        gets 100% from it over plain http (its availability check in two requests), its hash server
        through nginx."""
        rgw = CephRGW(os.path.join(self.workdir, "ceph"))
        self.addCleanup(rgw.stop)
        s3 = rgw.client()
        s3.create_bucket(Bucket="team")
        s3.put_bucket_policy(Bucket="team", Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
            "Resource": ["arn:aws:s3:::team/*"]}]}))
        postgres = PostgreSQL(os.path.join(self.workdir, "pg"))
        self.addCleanup(postgres.stop)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=rgw.access_key, AWS_SECRET_ACCESS_KEY=rgw.secret_key,
                   AWS_DEFAULT_REGION="default", AWS_ENDPOINT_URL=rgw.url, EQUIVCACHE_DATABASE=postgres.url)
        cache = "s3://team/yocto"
        # A second producer, with another C output (built before any server runs: one bitbake at a time).
        p2 = os.path.join(self.workdir, "p2")
        self.write_config('TMPDIR = "{a}/tmp"\nSSTATE_DIR = "{a}/sstate-cache"\nPERSISTENT_DIR = "{a}/persistent"\n'
                          'BB_SIGNATURE_HANDLER = "OEEquivHash"\nBB_HASHSERVE = "auto"\n'
                          'EQUIVCACHE_TEST_C_OUTPUT = "1"\n'.format(a=p2))
        self.build()
        fresh_bitbake_server(self.builddir)

        replicas, proxy, access = self.replicas_behind_nginx(cache, env, ("replica-1", "replica-2"))
        # Tokens through a state directory of nobody's: the state is in PostgreSQL.
        publishes = []
        for n, area in enumerate((self.producer, p2)):
            token = os.path.join(self.workdir, "ci-%d.token" % n)
            with open(token, "w") as f:
                f.write(runCmd([SERVER, "token", "add", "ci-%d" % n, cache, "--state-dir",
                                os.path.join(self.workdir, "admin")], env=env).output.splitlines()[-1])
            publishes.append(subprocess.Popen(
                [SERVER, "publish", "--from", self.builddir, "--to", proxy, "--token-file", token,
                 "--sstate-dir", os.path.join(area, "sstate-cache"),
                 "--stamps-dir", glob.glob(os.path.join(area, "tmp*", "stamps"))[0],
                 "--downloads-dir", os.path.join(self.workdir, "no-downloads"),
                 "--hashserv-db", os.path.join(area, "persistent", "hashserv.db")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))

        def landed(port):   # upload requests (missing, batches, commits) a replica answered
            with open(access) as f:
                return [line for line in f if line.split()[1].startswith("/upload/v1/")
                        and line.rstrip().endswith(":%d" % port)]
        wait_for(lambda: landed(replicas[0].http_port), 60, "no upload request reached replica 1")
        replicas[0].process.kill()
        killed_during = any(p.poll() is None for p in publishes)
        gcs = 0
        while any(p.poll() is None for p in publishes) or not gcs:
            self.assertIn("gc: 0 of", runCmd([SERVER, "gc", "--max-size", "10G", cache, "--state-dir",
                                               os.path.join(self.workdir, "replica-2")], env=env).output)
            gcs += 1
        for p in publishes:
            output = p.communicate()[0]
            self.assertEqual(p.returncode, 0, msg=output)
            self.assertRegex(output, r"equivalences: [1-9]\d* output hashes", msg=output)
        self.assertTrue(killed_during, msg="the publishes were over before replica 1 was killed")
        self.assertTrue(landed(replicas[1].http_port))
        with open(access) as f:
            lines = [line.split() for line in f]
        self.logger.info("uploads through nginx: %s; %d gc runs meanwhile", ", ".join(
            "replica %d: %d" % (n + 1, sum(1 for l in lines if l[-1].endswith(":%d" % r.http_port)))
            for n, r in enumerate(replicas)) + ", answers " + " ".join(sorted({"%s:%d" % (st, sum(
                1 for l in lines if l[2] == st)) for st in {l[2] for l in lines}})), gcs)
        self.assertIn("consistent", runCmd([SERVER, "check", cache, "--state-dir", os.path.join(self.workdir, "admin")],
                                           env=env).output)
        alone = runCmd([SERVER, "status", cache, "--state-dir", os.path.join(self.workdir, "alone")], ignore_status=True,
                       env={k: v for k, v in env.items() if k != "EQUIVCACHE_DATABASE"})
        self.assertIn("keeps its state (tokens, settings, gc's ledger) in PostgreSQL", alone.output)
        # Every state in the database, none in a replica's directory.
        self.assertEqual(postgres.query("SELECT COUNT(*) FROM equivcache_tokens"), "2")
        self.assertEqual(postgres.query("SELECT COUNT(*) FROM equivcache_publishes"), "2")
        for name in ("replica-1", "replica-2", "admin"):
            self.assertEqual(sorted(n for n in os.listdir(os.path.join(self.workdir, name, "server"))
                                    if n in ("tokens.json", "gc-ledger.db", "admin.json", "publish.lock")), [])

        self.assert_consumer_of_bucket(rgw, "team/yocto", "ws://%s/ws" % proxy.split("//", 1)[1])

    def replicas_behind_nginx(self, cache, env, names):
        """serve replicas of cache (each with its own state directory under workdir) behind a real nginx
        (config --nginx --replica) that logs which replica answered each request: (replicas, nginx's URL,
        its access log)."""
        port = free_port()
        proxy = "http://127.0.0.1:%d" % port
        replicas = [CacheServer(cache, extra=["--state-dir", os.path.join(self.workdir, name), "--public-url", proxy],
                                env=env, state_dir=os.path.join(self.workdir, name), websocket=True) for name in names]
        for replica in replicas:
            self.addCleanup(replica.stop)
        site = runCmd([SERVER, "config", "--nginx", "--bind", "127.0.0.1", "--http-port", str(port)] +
                      ["--replica=127.0.0.1:%d:%d" % (r.http_port, r.ws_port) for r in replicas] + [cache]).output
        access = os.path.join(self.workdir, "nginx-access.log")
        site = "log_format replicas '$request_method $uri $status $upstream_addr';\n" + site.replace(
            "server {\n", "server {\n    access_log %s replicas;\n" % access, 1)
        os.makedirs(os.path.join(self.workdir, "nginx"))
        nginx = Nginx(os.path.join(self.workdir, "nginx"), site, port)
        self.addCleanup(nginx.stop)
        return replicas, proxy, access

    def assert_consumer_of_bucket(self, rgw, path, hashserv):
        """A consumer configured from the bucket's URL alone gets 100% from it over plain http, with no
        warning and hashserv as its upstream; its availability check reads the sstate index in at most
        two requests, and objects are asked for only by the setscene tasks that fetch them."""
        self.assertIn("wrote conf/site.conf", self.configure_client("%s/%s" % (rgw.url, path)))
        self.consumer("", inherit=False)
        log = os.path.join(rgw.directory, "log", "client.rgw.log")
        before = os.path.getsize(log)
        output = self.build()
        self.assertIn('set BB_HASHSERVE_UPSTREAM = "%s"' % hashserv, output)
        self.assertEqual(warnings(output), [], msg=output)
        self.assert_full_match(output)
        with open(log, errors="replace") as f:
            f.seek(before)
            requests = [line for line in f if '"GET /%s/' % path in line or '"HEAD /%s/' % path in line]
        index = [r for r in requests if "/sstate-index/" in r]
        self.assertTrue(1 <= len(index) <= 2, msg="".join(requests))
        # stock's fetcher: a HEAD, then the GET, of each object a setscene task fetches
        def paths(method):
            return {r.split('"%s ' % method, 1)[1].split(" ", 1)[0] for r in requests
                    if '"%s /%s/sstate-cache/' % (method, path) in r and r.split('"%s ' % method, 1)[1]
                    .split(" ", 1)[0].endswith((".tar.zst", ".siginfo"))}
        self.assertTrue(paths("GET"), msg="".join(requests))
        self.assertEqual(paths("HEAD"), paths("GET"), msg="".join(requests))
