# SPDX-License-Identifier: MIT
#
# The real third-party services meta-equivcache's tests start, each in its
# own directory, on loopback or a unix socket, as the build user: a private
# PostgreSQL cluster, a single-node Ceph cluster with its RADOS Gateway (S3),
# nginx (with TLS from a test CA), and Debian's headless Chromium reading a
# page. The layer's own servers and the readers of bitbake's output are in
# equivcache.py beside this file.

import glob
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

from oeqa.utils.equivcache import free_port, wait_for

def postgres_bindir():
    """Debian's PostgreSQL server binaries (package postgresql), or None."""
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return os.path.dirname(initdb)
    found = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(found)) if found else None


class PostgreSQL:
    """A real PostgreSQL server of its own in `directory`: listening on a
    unix socket there only, trust authentication, one database "hashserv"."""

    def __init__(self, directory):
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (Debian package postgresql)")
        self.directory = directory
        self.data = os.path.join(directory, "data")
        subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "hashserv"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        subprocess.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-l",
                        os.path.join(directory, "postgresql.log"),
                        "-o", "-k %s -c listen_addresses=''" % directory, "start"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([os.path.join(self.bindir, "createdb"), "-h", directory, "-U", "hashserv", "hashserv"],
                       check=True)
        self.url = "postgresql+asyncpg://hashserv@/hashserv?host=%s" % directory

    def query(self, sql):
        out = subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.directory, "-U", "hashserv", "-At",
                              "-c", sql, "hashserv"], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self):
        subprocess.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class CephRGW:
    """A real S3 server: a single-node Ceph cluster (one monitor, one OSD on
    memstore: objects in memory, nothing on a disk) and its RADOS Gateway,
    from Debian's packages, in `directory`, on loopback ports, as the user
    who runs the test; stop() ends it. `url` is the gateway's (path-style
    buckets: URL/BUCKET/KEY), `access_key` and `secret_key` those of its one
    S3 user; `started_in` the seconds the start took."""

    def __init__(self, directory, memory=1 << 30):
        begun = time.monotonic()
        self.directory = directory
        for sub in ("run", "log", "mon.a", "osd.0", "rgw"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        self.mon_port, self.port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.access_key, self.secret_key = "EQUIVCACHETEST" + uuid.uuid4().hex[:6].upper(), uuid.uuid4().hex
        fsid = str(uuid.uuid4())
        self.conf = os.path.join(directory, "ceph.conf")
        d = directory
        with open(self.conf, "w") as f:
            f.write(CEPH_CONF.format(d=d, fsid=fsid, mon_port=self.mon_port, port=self.port, memory=memory))
        self.processes = []
        try:
            # cephx, as a real cluster: with auth "none" an OSD may ask the monitor before it knows the
            # cluster's fsid, be refused, and never come up.
            keyring = os.path.join(d, "keyring")
            for entity, caps in (("mon.", ["mon", "allow *"]),
                                 ("client.admin", ["mon", "allow *", "osd", "allow *", "mgr", "allow *"]),
                                 ("osd.0", ["mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd"]),
                                 ("client.rgw", ["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"])):
                create = ["--create-keyring"] if entity == "mon." else []
                caps_args = [a for i in range(0, len(caps), 2) for a in ("--cap", caps[i], caps[i + 1])]
                self._run("ceph-authtool", *create, keyring, "--gen-key", "-n", entity, *caps_args, config=False)
            self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", "[v1:127.0.0.1:%d]" % self.mon_port,
                      os.path.join(d, "monmap"), config=False)
            self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", os.path.join(d, "monmap"), "--keyring", keyring)
            self._start("ceph-mon", "-i", "a")
            osd_uuid = str(uuid.uuid4())
            # A monitor that has just started answers EPERM for a moment: asked again.
            self._retry("ceph", "osd", "new", osd_uuid)
            self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
            self._start("ceph-osd", "-i", "0")
            wait_for(lambda: b'"num_up_osds":1' in self._retry("ceph", "osd", "stat", "-f", "json").replace(b" ", b""),
                     120, "the Ceph OSD did not come up")
            self._start("radosgw", "-n", "client.rgw")
            wait_for(self._answers, 180, "the RADOS Gateway did not answer on %s" % self.url)
            self._run("radosgw-admin", "user", "create", "--uid", "equivcache", "--display-name", "equivcache tests",
                      "--access-key", self.access_key, "--secret", self.secret_key)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - begun

    def _run(self, *command, config=True):
        command = list(command) + (["-c", self.conf] if config else [])
        result = subprocess.run(command, capture_output=True, timeout=120)
        if result.returncode:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(command), result.returncode,
                                                      (result.stderr or result.stdout).decode(errors="replace")))
        return result.stdout

    def _retry(self, *command, timeout=60):
        """_run(), again until it succeeds or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._run(*command)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _start(self, *command):
        log = open(os.path.join(self.directory, "log", command[0] + ".out"), "ab")
        self.processes.append(subprocess.Popen(list(command) + ["-c", self.conf, "-f"], stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()

    def _answers(self):
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError("%s exited with %d; see %s/log" % (process.args[0], process.returncode,
                                                                    self.directory))
        try:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                return answer.status == 200
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def client(self):
        """A boto3 S3 client of the gateway's user."""
        import boto3
        import botocore.config
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="default",
                            config=botocore.config.Config(s3={"addressing_style": "path"}))

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
public addr = 127.0.0.1
ms bind msgr2 = false
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
crash dir = {d}/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 0
mon data avail warn = 1
osd crush chooseleaf type = 0
[mon]
mon data = {d}/mon.$id
[osd]
osd data = {d}/osd.$id
osd objectstore = memstore
memstore device bytes = {memory}
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{port}
rgw data = {d}/rgw
"""


def gpg(home, *args):
    """Real gpg in the GnuPG home `home`, batch mode; its completed process (an error raises)."""
    return subprocess.run(["gpg", "--batch", "--homedir", home] + list(args), check=True, capture_output=True)


def make_key(home, name):
    """A producer's signing key (no passphrase) made in its own GnuPG home: (home, its armored public
    key's path, its fingerprint)."""
    os.makedirs(home, mode=0o700)
    gpg(home, "--passphrase", "", "--quick-generate-key", "%s <%s@example.com>" % (name, name), "default", "sign",
        "never")
    public = home + ".asc"
    with open(public, "wb") as f:
        f.write(gpg(home, "--export", "--armor").stdout)
    listing = gpg(home, "--with-colons", "--list-keys").stdout.decode()
    return home, public, [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")][0]


def kill_agents(*homes):
    """Stop the gpg-agent that signing started in each GnuPG home."""
    for home in homes:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True)


def test_ca(directory):
    """A test certificate authority and a server certificate it signed for
    127.0.0.1 and localhost, made by openssl in directory: (CA certificate,
    which SSL_CERT_FILE names for the clients; server certificate; its key)."""
    ca, ca_key = os.path.join(directory, "test-ca.pem"), os.path.join(directory, "test-ca.key")
    cert, key = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    request, extensions = os.path.join(directory, "server.csr"), os.path.join(directory, "server.ext")
    with open(extensions, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=equivcache test CA",
             "-keyout", ca_key, "-out", ca],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", request],
            ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
             "-extfile", extensions, "-out", cert]):
        subprocess.run(["openssl"] + command, check=True, capture_output=True)
    return ca, cert, key


class Nginx:
    """A real nginx (Debian's nginx-light) serving `site` (a server block, as
    equivcache-server config --nginx prints it) with its files in `directory`,
    until stop(); `port` is where the site listens (waited for)."""

    def __init__(self, directory, site, port):
        conf = os.path.join(directory, "nginx.conf")
        with open(conf, "w") as f:
            f.write("daemon off;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n"
                    "access_log off;\nclient_body_temp_path %s;\nproxy_temp_path %s;\nfastcgi_temp_path %s;\n"
                    "uwsgi_temp_path %s;\nscgi_temp_path %s;\n%s}\n" % ((directory,) * 7 + (site,)))
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
        check = subprocess.run([nginx, "-t", "-p", directory, "-c", conf], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError("nginx -t: %s" % check.stderr)
        self.process = subprocess.Popen([nginx, "-p", directory, "-c", conf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 30, "nginx did not listen")

    def stop(self):
        self.process.terminate()
        self.process.wait()


def chromium(url, workdir, screenshot=None):
    """The DOM of url as Debian's headless Chromium renders it (and, with
    screenshot, a PNG of the page there)."""
    binary = shutil.which("chromium")
    if binary is None:
        raise RuntimeError("no chromium (Debian package chromium; tests/setup installs it)")
    command = [binary, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--user-data-dir=" + os.path.join(workdir, "chromium-profile"), "--window-size=1280,2200"]
    if screenshot:
        subprocess.run(command + ["--screenshot=" + screenshot, url], check=True, capture_output=True, timeout=120)
    return subprocess.run(command + ["--dump-dom", url], check=True, capture_output=True, text=True,
                          timeout=120).stdout


def page_figures(dom):
    """{id: text} of the dashboard's headline figures (<b id="...">) in a DOM."""
    return dict(re.findall(r'<b id="([a-z-]+)">([^<]*)</b>', dom))
