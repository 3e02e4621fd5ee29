# SPDX-License-Identifier: MIT
#
# equivcache-doctor's analysis (lib/equivcache/doctor/analysis.py) on signature data
# files in bitbake's own format, compared by bitbake's own compare_sigfiles.

import json
import os

import pytest

from conftest import need_bitbake

need_bitbake()

import bb.compress.zstd  # noqa: E402
import bb.siggen  # noqa: E402

from equivcache import names  # noqa: E402
from equivcache.catalog import build as build_index  # noqa: E402
from equivcache.doctor import analysis as doctor  # noqa: E402
from equivcache.doctor import values  # noqa: E402


def sigdata(task, varvals, deps=None, files=(), taskhash=None, unihash=None):
    """A sigdata document as bitbake's dump_sigtask() writes it, with consistent hashes."""
    data = {
        "task": task, "basehash_ignore_vars": set(), "taskhash_ignore_tasks": None,
        "taskdeps": sorted(varvals), "gendeps": {v: set() for v in varvals},
        "varvals": dict(varvals, **{task: "do the work"}),
        "runtaskdeps": sorted(deps or {}), "runtaskhashes": dict(deps or {}),
        "file_checksum_values": list(files),
    }
    data["basehash"] = bb.siggen.calc_basehash(data)
    data["taskhash"] = taskhash or bb.siggen.calc_taskhash(data)
    data["unihash"] = unihash or data["taskhash"]
    return data


def write(root, recipe, data):
    path = os.path.join(root, "x86_64-linux", recipe, "1.0-r0.%s.sigdata.%s" % (data["task"], data["unihash"]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with bb.compress.zstd.open(path, "wt", encoding="utf-8", num_threads=1) as f:
        json.dump(data, f, sort_keys=True, separators=(",", ":"), cls=bb.siggen.SetEncoder)   # as dump_sigtask
    return path


def load(path):
    with bb.compress.zstd.open(path, "rt", encoding="utf-8", num_threads=1) as f:
        return json.load(f, object_hook=bb.siggen.SetDecoder)


def chain(root, features, extra="0", b_flag="-O2"):
    """a:do_compile -> a:do_populate_sysroot -> b:do_compile -> b:do_populate_sysroot -> b:do_build;
    DISTRO_FEATURES in a:do_compile, B_FLAG in b:do_compile; returns {pnid: path}."""
    paths = {}
    ac = sigdata("do_compile", {"DISTRO_FEATURES": features, "EXTRA": extra})
    paths["a:do_compile"] = write(root, "a", ac)
    ap = sigdata("do_populate_sysroot", {"SYSROOT_DIRS": "/usr"}, {"a:do_compile": ac["unihash"]})
    paths["a:do_populate_sysroot"] = write(root, "a", ap)
    bc = sigdata("do_compile", {"B_FLAG": b_flag}, {"a:do_populate_sysroot": ap["unihash"]})
    paths["b:do_compile"] = write(root, "b", bc)
    bp = sigdata("do_populate_sysroot", {"SYSROOT_DIRS": "/usr"}, {"b:do_compile": bc["unihash"]})
    paths["b:do_populate_sysroot"] = write(root, "b", bp)
    bb_ = sigdata("do_build", {}, {"b:do_populate_sysroot": bp["unihash"]})
    paths["b:do_build"] = write(root, "b", bb_)
    return paths


def mirror_index(root):
    """The index publish writes: signatures from siginfo/, objects for the setscene tasks."""
    index = build_index(os.path.join(root, "sstate-cache"), siginfo_dir=os.path.join(root, "siginfo"))
    for sig in index["signatures"]:
        if sig["task"] == "do_populate_sysroot":
            index["objects"].append({"recipe": sig["recipe"], "task": sig["task"], "unihash": sig["unihash"],
                                     "path": "xx/%s.tar.zst" % sig["unihash"], "size": 1, "siginfo": ""})
    return doctor.Mirror(index)


def local(root, **kw):
    tasks = {}
    for pnid, path in chain(root, **kw).items():
        recipe, task, unihash = names.parse_sigdata_name(os.path.relpath(path, root))
        tasks[pnid] = doctor.Task(recipe, task, unihash, path, load(path))
    return tasks


def diagnose(tmp_path, **kw):
    mirror_root = str(tmp_path / "cache")
    chain(os.path.join(mirror_root, "siginfo"), "acl ipv6")
    mirror = mirror_index(mirror_root)

    def fetch(paths):
        return {p: os.path.join(mirror_root, p) for p in paths}
    return doctor.analyse(local(str(tmp_path / "local"), **kw), mirror, fetch, load, bb.siggen.compare_sigfiles)


def test_covered(tmp_path):
    doc = diagnose(tmp_path, features="acl ipv6")
    assert doc["setscene"] == {"tasks": 2, "covered": 2, "uncovered": 0}
    assert doc["causes"] == []


def test_one_variable_root_and_cost(tmp_path):
    doc = diagnose(tmp_path, features="acl ipv6 x11")
    assert doc["setscene"] == {"tasks": 2, "covered": 0, "uncovered": 2}
    # a:do_compile is the only root; the four tasks after it only inherit.
    assert doc["differing"] == 4
    [cause] = doc["causes"]
    assert (cause["kind"], cause["name"], cause["mirror"], cause["local"]) == \
        ("variable", "DISTRO_FEATURES", "acl ipv6", "acl ipv6 x11")
    assert (cause["added"], cause["removed"]) == (["x11"], [])
    assert cause["summary"] == "DISTRO_FEATURES differs (yours adds x11)"
    assert cause["roots"] == ["a:do_compile"]
    assert (cause["tasks"], cause["setscene_tasks"]) == (5, 2)
    assert "Variable DISTRO_FEATURES value changed:" in "\n".join(cause["bitbake"])
    text = doctor.render(dict(doc, targets=["b"]))
    assert "1. DISTRO_FEATURES differs (yours adds x11): 5 tasks (2 setscene), root a:do_compile" in text


def test_two_causes_ranked(tmp_path):
    doc = diagnose(tmp_path, features="acl ipv6", extra="1", b_flag="-O3")
    assert [(c["name"], c["mirror"], c["local"], c["tasks"], c["roots"]) for c in doc["causes"]] == [
        ("EXTRA", "0", "1", 5, ["a:do_compile"]),
        ("B_FLAG", "-O2", "-O3", 3, ["b:do_compile"]),
    ]
    assert doc["causes"][1]["summary"] == 'B_FLAG differs (yours "-O3", the mirror\'s "-O2")'


def test_unknown_and_absent(tmp_path):
    mirror_root = str(tmp_path / "cache")
    paths = chain(os.path.join(mirror_root, "siginfo"), "acl ipv6")
    os.unlink(paths["a:do_compile"])          # the producer restored it from sstate
    mirror = mirror_index(mirror_root)
    tasks = local(str(tmp_path / "local"), features="acl ipv6 x11")
    tasks["c:do_populate_sysroot"] = doctor.Task("c", "do_populate_sysroot", "c" * 64, "/nonexistent",
                                                 {"runtaskdeps": []})
    doc = doctor.analyse(tasks, mirror, lambda ps: {p: os.path.join(mirror_root, p) for p in ps}, load,
                         bb.siggen.compare_sigfiles)
    assert doc["unknown"] == ["a:do_compile"]
    assert [(c["kind"], c["name"], c["tasks"]) for c in doc["causes"]] == [("absent", "c", 1)]
    assert doc["causes"][0]["summary"] == "recipe c is not on the mirror at all (no producer built it)"


def test_unihash_only(tmp_path):
    """Same task hash as the mirror's, another unihash: the seed's missing upstream."""
    mirror_root = str(tmp_path / "cache")
    siginfo = os.path.join(mirror_root, "siginfo")
    data = sigdata("do_populate_sysroot", {"SYSROOT_DIRS": "/usr"})
    write(siginfo, "a", dict(data, unihash="e" * 64))
    mirror = mirror_index(mirror_root)
    path = write(str(tmp_path / "local"), "a", data)
    tasks = {"a:do_populate_sysroot": doctor.Task("a", "do_populate_sysroot", data["unihash"], path, data)}
    doc = doctor.analyse(tasks, mirror, lambda ps: {p: os.path.join(mirror_root, p) for p in ps}, load,
                         bb.siggen.compare_sigfiles)
    assert [c["kind"] for c in doc["causes"]] == ["unihash"]
    assert "BB_HASHSERVE_UPSTREAM" in doc["causes"][0]["summary"]


@pytest.mark.parametrize("mirror, local, text", [
    ("a b c", "a b c d", "(yours adds d)"),
    ("a b c", "a c", "(yours removes b)"),
    ("a b", "a x", "(yours adds x and removes b)"),
    # bb.utils.contains/filter: bitbake records "VAR{item} = Set|Unset" in the value that tests it.
    ("${@bb.utils.filter('DISTRO_FEATURES', 'pam', d)}\nDISTRO_FEATURES{pam} = Unset",
     "${@bb.utils.filter('DISTRO_FEATURES', 'pam', d)}\nDISTRO_FEATURES{pam} = Set",
     "(DISTRO_FEATURES contains \"pam\" in yours, not in the mirror's)"),
    ("a\nX{y z} = Set", "a b\nX{y z} = Unset", "(yours adds b; X contains \"y z\" in the mirror's, not in yours)"),
    ("a\nX{y} = Set", "a", "(only the mirror's tests whether X contains \"y\")"),
    ("0", "1", '(yours "1", the mirror\'s "0")'),
    (None, "1", '(yours sets it to "1", the mirror\'s does not depend on it)'),
])
def test_describe_values(mirror, local, text):
    assert values.describe_values(mirror, local) == text


def test_batched_sigdata_loader(tmp_path, monkeypatch):
    """The doctor's loader reads bitbake's sigdata files as bb.compress.zstd does, in batches; the tasks
    they depend on alone as the whole documents say; a batch with a damaged file is read file by file,
    the damaged one None."""
    from equivcache.doctor import command
    monkeypatch.setattr(command, "ZSTD_BATCH", 3)
    paths = list(chain(str(tmp_path), "acl ipv6").values())
    broken = str(tmp_path / "x86_64-linux" / "a" / "1.0-r0.do_install.sigdata.0123456789")
    with open(broken, "wb") as f:
        f.write(b"\x28\xb5\x2f\xfd not zstd")
    calls = []

    def one(path):
        calls.append(path)
        try:
            return load(path)
        except (OSError, ValueError, EOFError):
            return None
    loader = command.SigdataLoader(bb.siggen.SetDecoder, one)
    loaded = loader.load_many(paths + [broken])
    assert loaded == dict({p: load(p) for p in paths}, **{broken: None})
    assert loaded[paths[0]]["basehash_ignore_vars"] == frozenset()   # bitbake's SetDecoder, as it reads them
    # The two whole batches of three in one zstd each; only the batch with the damaged file file by file.
    assert calls == paths[3:] + [broken]
    assert loader.deps_many(paths) == {p: load(p)["runtaskdeps"] for p in paths}
    assert [d for d in loader.deps_many(paths).values() if d], "the chain has dependencies"
    tasks = [doctor.Task("a", "do_compile", "x", p) for p in paths[:2]]
    loader.complete(tasks)
    assert [t.data for t in tasks] == [load(p) for p in paths[:2]]
