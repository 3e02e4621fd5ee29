# SPDX-License-Identifier: MIT
#
# scripts/equivcache-client run for real on a build directory's conf/:
# the block written once, a symbolic link (bitbake-setup's shared
# site.conf) kept a link, --remove, and the one-line usage errors.

import os
import subprocess
import sys

from oeqa.utils.equivcache import CLIENT, LAYERDIR

URL = "http://cache.example.com:8080"


def builddir(tmp_path):
    conf = tmp_path / "build" / "conf"
    conf.mkdir(parents=True)
    (conf / "local.conf").write_text('MACHINE = "qemux86-64"\n')
    (conf / "bblayers.conf").write_text('BBLAYERS ?= "/srv/poky/meta %s"\n' % LAYERDIR)
    return tmp_path / "build"


def client(build, *args):
    return subprocess.run([sys.executable, CLIENT, "--builddir", str(build), "--no-check", *args],
                          capture_output=True, text=True, timeout=60)


def test_writes_the_block_once(tmp_path):
    build = builddir(tmp_path)
    first = client(build, "--server", URL)
    assert first.returncode == 0 and first.stdout == "wrote conf/site.conf\n", first
    site = (build / "conf" / "site.conf").read_text()
    assert 'INHERIT += "equivcache"' in site and 'EQUIVCACHE_SERVER = "%s"' % URL in site
    again = client(build, "--server", URL)
    assert again.stdout == "conf/site.conf is already up to date\n", again
    assert (build / "conf" / "site.conf").read_text() == site
    removed = client(build, "--remove")
    assert removed.stdout == "removed the block from conf/site.conf\n", removed
    assert "equivcache" not in (build / "conf" / "site.conf").read_text()


def test_a_linked_site_conf_stays_a_link(tmp_path):
    """bitbake-setup links every build's conf/site.conf to one file at the top of the setup."""
    build = builddir(tmp_path)
    shared = tmp_path / "site.conf"
    shared.write_text('SSTATE_DIR = "/srv/setup/sstate-cache"\n')
    os.symlink(os.path.relpath(shared, build / "conf"), build / "conf" / "site.conf")
    result = client(build, "--server", URL)
    assert result.returncode == 0, result
    assert os.path.islink(build / "conf" / "site.conf")
    text = shared.read_text()
    assert text.startswith('SSTATE_DIR = "/srv/setup/sstate-cache"\n') and 'EQUIVCACHE_SERVER = "%s"' % URL in text


def test_usage_errors_are_one_line(tmp_path):
    build = builddir(tmp_path)
    for args in (["--server", "ftp://cache"], ["--server", URL, "--builddir", str(tmp_path)]):
        result = client(build, *args)
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("equivcache-client: error: "), result
