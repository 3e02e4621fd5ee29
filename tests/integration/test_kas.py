# SPDX-License-Identifier: MIT
#
# kas (from PyPI, installed by tests/setup), run for real and offline against
# the release tree POKY_DIR: the shipped kas/equivcache.yml and
# kas/equivcache-client.yml included from a project file whose repositories
# are local paths, as the quick start's examples with their URLs replaced. kas
# dump shows the handler and the class; kas build of the test chain passes;
# a consumer's kas build against a cache served on loopback gets everything
# from the mirror; the quick start's example, as a newcomer copies it, builds.

import os
import re
import shutil
import subprocess

import pytest

from conftest import LAYERDIR, POKY_DIR, need_bitbake
from oeqa.utils.equivcache import SERVER, CacheServer, executed_tasks, sstate_summary

need_bitbake()

yaml = pytest.importorskip("yaml", reason="kas's PyYAML")
KAS = shutil.which("kas", path="/usr/local/bin:/usr/bin:" + os.environ.get("PATH", ""))
pytestmark = [
    pytest.mark.skipif(KAS is None, reason="needs kas (tests/setup installs it from PyPI)"),
    pytest.mark.skipif(os.getuid() == 0, reason="bitbake refuses to run as root"),
]

# The selftests' mask (tests/run): only the test chain parses.
MASK = "/meta/recipes- /meta-poky/recipes- /meta-yocto-bsp/recipes- /meta-selftest/"
WRYNOSE = os.path.isdir(os.path.join(POKY_DIR, "bitbake", "default-registry"))


def offline(work):
    """A kas file to put after a project's: the test chain, offline, masked."""
    return {
        "header": {"version": 14},
        "distro": "nodistro",
        "target": "equivcache-c-native",
        "repos": {"equivcache-test": {"path": os.path.join(LAYERDIR, "tests", "meta-equivcache-test")}},
        "local_conf_header": {"zz-offline": "\n".join([
            'BB_NO_NETWORK = "1"', 'DL_DIR = "%s/downloads"' % work, 'SSTATE_DIR = "%s/sstate-cache"' % work,
            'BBMASK += "%s"' % MASK, 'BBFILE_PATTERN_IGNORE_EMPTY_core = "1"',
            'BBFILE_PATTERN_IGNORE_EMPTY_yocto = "1"', 'BBFILE_PATTERN_IGNORE_EMPTY_yoctobsp = "1"',
            'INHERIT_DISTRO:remove = "uninative"', 'BB_NUMBER_PARSE_THREADS = "1"', ""])},
    }


def local_repos(doc, work):
    """doc's repositories at local paths instead of their URLs: the layer's
    checkout, the release tree (on wrynose, its parts side by side)."""
    for name, repo in doc["repos"].items():
        for key in ("url", "branch", "commit", "tag"):
            repo.pop(key, None)
        if name == "meta-equivcache":
            repo["path"] = LAYERDIR
        elif name in ("poky", "openembedded-core"):
            repo["path"] = POKY_DIR
        elif name == "bitbake":
            repo["path"] = os.path.join(POKY_DIR, "bitbake")
        elif name == "meta-yocto":   # in a directory of its own: one init script per tree
            repo["path"] = os.path.join(work, "meta-yocto")
            os.makedirs(repo["path"], exist_ok=True)
            for layer in ("meta-poky", "meta-yocto-bsp"):
                if not os.path.lexists(os.path.join(repo["path"], layer)):
                    os.symlink(os.path.join(POKY_DIR, layer), os.path.join(repo["path"], layer))
    return doc


def project(work, include="kas/equivcache.yml"):
    """A project file including the shipped one, on the local release tree."""
    doc = {"header": {"version": 14, "includes": [{"repo": "meta-equivcache", "file": include}]},
           "machine": "qemux86-64",
           "repos": {"meta-equivcache": {}, "poky": {"layers": {"meta": None}}}}
    return local_repos(doc, work)


def write(path, doc):
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def kas(work, *args, env=None):
    os.makedirs(work, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BB", "KAS_", "EQUIVCACHE_"))}
    environment.update(KAS_WORK_DIR=work, **(env or {}))
    return subprocess.run([KAS, *args], cwd=work, env=environment, capture_output=True, text=True, timeout=900)


def files(work, *docs):
    """kas's colon-separated list of the docs written into work."""
    os.makedirs(work, exist_ok=True)
    return ":".join(write(os.path.join(work, "%d.yml" % n), doc) for n, doc in enumerate(docs))


def test_kas_dump(tmp_path):
    work = str(tmp_path)
    result = kas(work, "dump", "--resolve-env", files(work, project(work, "kas/equivcache-client.yml")),
                 env={"EQUIVCACHE_SERVER": "http://cache.example.com:8080", "EQUIVCACHE_MODE": "fatal"})
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    header = doc["local_conf_header"]["meta-equivcache"]
    assert 'BB_SIGNATURE_HANDLER = "EquivCacheHash"' in header and 'INHERIT += "equivcache"' in header
    assert doc["env"] == {"EQUIVCACHE_SERVER": "http://cache.example.com:8080", "EQUIVCACHE_MODE": "fatal"}
    default = kas(work, "dump", "--resolve-env", files(work, project(work)))
    assert yaml.safe_load(default.stdout)["env"] == {"EQUIVCACHE_MODE": "warn"}, default.stderr


def built(result):
    """kas build's output, asserted successful, without the time and level kas puts before
    each line of bitbake's ("2026-12-04 05:57:58 - INFO     - NOTE: ...")."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - \w+ +- ", "", output, flags=re.MULTILINE)


def test_kas_build_and_consumer(tmp_path):
    """kas build of the chain with the shipped file; its build published and served; a consumer's
    kas build with kas/equivcache-client.yml and EQUIVCACHE_SERVER takes everything from the mirror."""
    producer = str(tmp_path / "producer")
    output = built(kas(producer, "build", files(producer, project(producer), offline(producer))))
    assert {"equivcache-a-native:do_compile", "equivcache-c-native:do_install"} <= executed_tasks(output), output
    with open(os.path.join(producer, "build", "conf", "local.conf")) as f:
        conf = f.read()
    assert 'BB_SIGNATURE_HANDLER = "EquivCacheHash"' in conf and 'INHERIT += "equivcache"' in conf
    assert re.search(r"^equivcache: setscene ", output, re.MULTILINE), output   # the class's report line

    cache = str(tmp_path / "cache")
    published = subprocess.run([SERVER, "publish", "--from", os.path.join(producer, "build"), cache],
                               capture_output=True, text=True, timeout=300)
    assert published.returncode == 0, published
    assert "SSTATE_DIR %s/sstate-cache" % producer in published.stdout, published.stdout
    server = CacheServer(cache)
    try:
        consumer = str(tmp_path / "consumer")
        output = built(kas(consumer, "build", files(consumer, project(consumer, "kas/equivcache-client.yml"),
                                                    offline(consumer)), env={"EQUIVCACHE_SERVER": server.url}))
    finally:
        server.stop()
    summary = sstate_summary(output)
    assert summary and (summary["mirror"], summary["missed"]) == (summary["wanted"], 0), output
    assert not [t for t in executed_tasks(output) if not t.endswith("_setscene")], output


QUICK_START = os.path.join(LAYERDIR, "docs", "user-guide", "quick-start.md")


def readme_example(release):
    """The quick start's kas example for the release (docs/user-guide/quick-start.md), as a newcomer copies it."""
    with open(QUICK_START) as f:
        readme = f.read()
    m = re.search(r"<!-- kas example: %s -->\n```yaml\n(.*?)```" % release, readme, re.DOTALL)
    assert m, "no kas example for %s in %s" % (release, QUICK_START)
    with open(os.path.join(LAYERDIR, "kas", "examples", "%s.yml" % release)) as f:
        shipped = f.read()
    assert m.group(1) in shipped, "the quick start's %s example is not kas/examples/%s.yml" % (release, release)
    return yaml.safe_load(m.group(1))


def test_newcomer_kas_path(tmp_path):
    """The quick start's example for this release, its URLs replaced by local paths, builds
    (the test chain, offline) with meta-equivcache switched on."""
    work = str(tmp_path)
    doc = local_repos(readme_example("wrynose" if WRYNOSE else "scarthgap"), work)
    output = built(kas(work, "build", files(work, doc, offline(work))))
    assert "equivcache-c-native:do_install" in executed_tasks(output), output
    assert re.search(r"^equivcache: setscene ", output, re.MULTILINE), output
