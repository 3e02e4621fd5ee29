# SPDX-License-Identifier: MIT
#
# bitbake-setup (wrynose and later) with the shipped configuration
# bitbake-setup/equivcache-wrynose.conf.json, as it is: its sources
# overridden by local git remotes (git repositories made from the release
# tree and the layer), offline. init gives a build directory where the
# equivcache/enable fragment is on, and the test chain builds there with
# EquivCacheHash and the class.

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import LAYERDIR, POKY_DIR, need_bitbake
from oeqa.utils.equivcache import SERVER, executed_tasks

need_bitbake()

SETUP = os.path.join(POKY_DIR, "bitbake", "bin", "bitbake-setup")
CONFIG = os.path.join(LAYERDIR, "bitbake-setup", "equivcache-wrynose.conf.json")
MASK = "/meta/recipes- /meta-selftest/"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(SETUP), reason="bitbake-setup comes with wrynose's bitbake"),
    pytest.mark.skipif(os.getuid() == 0, reason="bitbake refuses to run as root"),
]
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@localhost"}


def git_remote(source, target, branch, exclude=()):
    """A local git repository holding source's tree on `branch`: a stand-in for a real remote."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", *exclude))
    env = dict(os.environ, **GIT)
    for command in (["git", "init", "-q", "-b", branch], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "tree"]):
        subprocess.run(command, cwd=target, env=env, check=True, capture_output=True)
    return "file://" + target


def test_bitbake_setup_init_and_build(tmp_path):
    with open(CONFIG) as f:
        config = json.load(f)
    remotes = tmp_path / "remotes"
    overrides = {"sources": {}}
    for name, source, exclude in (("bitbake", os.path.join(POKY_DIR, "bitbake"), ()),
                                  ("openembedded-core", POKY_DIR, ("bitbake", "meta-poky", "meta-yocto-bsp")),
                                  ("meta-equivcache", LAYERDIR, ())):
        remote = config["sources"][name]["git-remote"]
        uri = git_remote(source, str(remotes / name), remote["branch"], exclude)
        overrides["sources"][name] = {"git-remote": dict(remote, uri=uri)}
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    top = tmp_path / "top"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BB")}
    env.update(HOME=str(tmp_path), **GIT)   # bitbake-setup's global settings live under HOME
    result = subprocess.run([SETUP, "--setting", "default", "top-dir-prefix", str(tmp_path), "--setting", "default",
                             "top-dir-name", "top", "init", "--non-interactive", "--no-init-vscode",
                             "--source-overrides", str(tmp_path / "overrides.json"), CONFIG, "nodistro-equivcache", "machine/qemux86-64"],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    setup = top / config["bitbake-setup"]["configurations"][0]["setup-dir-name"]
    build = setup / "build"
    with open(build / "conf" / "toolcfg.conf") as f:
        fragments = f.read()
    assert re.search(r'^OE_FRAGMENTS \+?= ".*\bequivcache/enable\b', fragments, re.MULTILINE), fragments

    # The chain, offline, in that build directory.
    with open(build / "conf" / "bblayers.conf", "a") as f:
        f.write('BBLAYERS += "%s/tests/meta-equivcache-test"\n' % LAYERDIR)
    with open(build / "conf" / "local.conf", "a") as f:
        f.write('BB_NO_NETWORK = "1"\nBBMASK += "%s"\nBBFILE_PATTERN_IGNORE_EMPTY_core = "1"\n'
                'INHERIT_DISTRO:remove = "uninative"\nDL_DIR = "%s/downloads"\n' % (MASK, tmp_path))
    values = subprocess.run(["bash", "-c", ". ./init-build-env >/dev/null && bitbake-getvar --value -q "
                             "BB_SIGNATURE_HANDLER && bitbake equivcache-c-native"],
                            cwd=str(build), env=env, capture_output=True, text=True, timeout=900)
    output = values.stdout + values.stderr
    assert values.returncode == 0, output[-6000:]
    assert output.splitlines()[0] == "EquivCacheHash", output[:2000]
    assert "equivcache-c-native:do_install" in executed_tasks(output), output[-6000:]
    assert re.search(r"^equivcache: setscene ", output, re.MULTILINE), output[-6000:]

    # publish from that build directory: bitbake-setup's shared site.conf puts
    # SSTATE_DIR and DL_DIR outside it, and publish finds them as bitbake does.
    site = subprocess.run(["bash", "-c", ". ./init-build-env >/dev/null && bitbake-getvar --value -q SSTATE_DIR"],
                          cwd=str(build), env=env, capture_output=True, text=True, timeout=300)
    sstate_dir = site.stdout.strip().splitlines()[-1]
    assert not sstate_dir.startswith(str(build) + "/"), site.stdout
    published = subprocess.run([SERVER, "publish", "--from", str(build), str(tmp_path / "cache")],
                               env=env, capture_output=True, text=True, timeout=300)
    assert published.returncode == 0, published
    assert "SSTATE_DIR %s" % sstate_dir in published.stdout, published.stdout
    assert re.search(r"^sstate: [1-9]\d* files copied", published.stdout, re.MULTILINE), published.stdout
