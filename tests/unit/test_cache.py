# SPDX-License-Identifier: MIT
#
# The cache's files: sstate and signature names (names.py), the object index
# (catalog.py), atomic writes (files.py), and what publish reads of a producer
# (server/store/local.py, server/producer/build.py): what a mirror copies from
# DL_DIR, the build configuration in a cooker log.

import json
import os

import pytest

from equivcache import files
from equivcache.names import nativelsbstrings, parse_sigdata_name, parse_sstate_name
from equivcache.catalog import build as build_index
from equivcache.server.producer import build
from equivcache.server.store.local import download_files

H = "ad72a9d42a35b1c5dbeee1b2065efbca91dc6b95bb2ea5ed000f89761962869c"


@pytest.mark.parametrize("path, expected", [
    ("ad/72/sstate:equivcache-b-native::1.0:r0::12:%s_populate_sysroot.tar.zst" % H,
     ("equivcache-b-native", "do_populate_sysroot", H, "object")),
    ("debian-12/ad/72/sstate:zlib-native:x86_64-linux:1.3.1:r0:x86_64:12:%s_populate_sysroot.tar.zst.siginfo" % H,
     ("zlib-native", "do_populate_sysroot", H, "siginfo")),
    ("ad/72/sstate:busybox:core2-64-oe-linux:1.36.1:r0:core2-64:12:%s_package_write_rpm.tar.zst.sig" % H,
     ("busybox", "do_package_write_rpm", H, "sig")),
    ("ad/72/sstate:a::1.0:r0::12:%s_unpack.tar.zst.siginfo" % H, ("a", "do_unpack", H, "siginfo")),
])
def test_parse_sstate_name(path, expected):
    assert parse_sstate_name(path) == expected


@pytest.mark.parametrize("path", [
    "ad/72/README",
    "ad/72/sstate:a::1.0:r0::12:%s_unpack.tar.zst.lock" % H,      # not a suffix sstate writes
    "ad/72/sstate:a::1.0:r0::12:%s.tar.zst" % H,                  # no task
    "ad/72/sstate:a:1.0:%s_unpack.tar.zst" % H,                   # too few fields
    "ad/72/sstate:::1.0:r0::12:%s_unpack.tar.zst" % H,            # no recipe
    "ad/72/sstate:a::1.0:r0::12:_unpack.tar.zst",                 # no unihash
])
def test_parse_sstate_name_rejects(path):
    assert parse_sstate_name(path) is None


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_index_objects_and_signatures(tmp_path):
    sstate = str(tmp_path)
    obj = "ad/72/sstate:a::1.0:r0::12:%s_populate_sysroot.tar.zst" % H
    touch(os.path.join(sstate, obj), b"12345")
    touch(os.path.join(sstate, obj + ".siginfo"))
    touch(os.path.join(sstate, obj + ".sig"))
    only_sig = "01/2f/sstate:b::1.0:r0::12:%s_fetch.tar.zst.siginfo" % ("012f" + H[4:])
    touch(os.path.join(sstate, only_sig))
    touch(os.path.join(sstate, "ad/72/.tmp-123-partial"))
    index = build_index(sstate, generated="2026-01-01T00:00:00Z")
    assert index["format"] == "equivcache-index" and index["version"] == 2
    assert index["signatures"] == []
    assert index["objects"] == [
        {"recipe": "b", "task": "do_fetch", "unihash": "012f" + H[4:], "path": "", "size": 0, "siginfo": only_sig},
        {"recipe": "a", "task": "do_populate_sysroot", "unihash": H, "path": obj, "size": 5,
         "siginfo": obj + ".siginfo"},
    ]
    json.dumps(index)


def test_index_task_signatures(tmp_path):
    """The producer's STAMPS_DIR sigdata, as publish copies it to siginfo/: one entry per task run."""
    siginfo = str(tmp_path / "siginfo")
    names = ["x86_64-linux/equivcache-a-native/1.0-r0.do_compile.sigdata." + H,
             "core2-64-poky-linux/base-files/3.0.14-r0.do_install.sigdata." + "0" * 64,
             "x86_64-linux/equivcache-a-native/1.0-r0.do_compile." + H,               # a stamp
             "x86_64-linux/equivcache-a-native/1.0-r0.do_compile.sigdata.notahash",   # not bitbake's
             "x86_64-linux/equivcache-a-native/1.0-r0.do_compile.sigbasedata." + H]   # -S without runtime data
    for name in names:
        touch(os.path.join(siginfo, name))
    index = build_index(str(tmp_path / "sstate"), generated="2026-01-01T00:00:00Z", siginfo_dir=siginfo)
    assert index["signatures"] == [
        {"recipe": "base-files", "task": "do_install", "unihash": "0" * 64, "path": names[1]},
        {"recipe": "equivcache-a-native", "task": "do_compile", "unihash": H, "path": names[0]},
    ]
    assert parse_sigdata_name("1.0-r0.do_compile.sigdata." + H) is None


def test_download_files_skip_fetcher_state(tmp_path):
    dl = str(tmp_path)
    for name in ("zlib-1.3.1.tar.xz", "uninative/abc/x86_64-nativesdk-libc.tar.xz", "git2/github.com.x.y/HEAD",
                 "zlib-1.3.1.tar.xz.done", "zlib-1.3.1.tar.xz.lock", "git2_github.com.x.y.tar.gz", ".hidden"):
        touch(os.path.join(dl, name))
    assert sorted(rel for rel, _ in download_files(dl)) == [
        "git2_github.com.x.y.tar.gz", "uninative/abc/x86_64-nativesdk-libc.tar.xz", "zlib-1.3.1.tar.xz"]


def test_nativelsbstrings():
    paths = ["ad/72/sstate:a::1:r0::4:%s_populate_sysroot.tar.zst" % H, "debian-12/ad/72/x", "universal/ad/72/y",
             "universal/ad/72/z", ".git/HEAD", "top-level-file"]
    assert nativelsbstrings(paths) == ["debian-12", "universal"]
    assert nativelsbstrings([]) == []


COOKER_LOG = '''NOTE: Resolving any missing task queue dependencies

Build Configuration:
BB_VERSION           = "2.8.1"
BUILD_SYS            = "x86_64-linux"
NATIVELSBSTRING      = "debian-12"
TARGET_SYS           = "x86_64-oe-linux"
MACHINE              = "qemux86-64"
DISTRO               = "nodistro"
DISTRO_VERSION       = "nodistro.0"
TUNE_FEATURES        = "m64 core2"
TARGET_FPU           = ""
meta                 
meta-poky            = "scarthgap:0123abcd"
meta-equivcache      = "main:4567ef01"

Sstate summary: Wanted 14 Local 0 Mirrors 0 Missed 14 Current 0 (0% match, 0% complete)
'''


def test_parse_build_configuration():
    values, layers = build.parse_build_configuration(COOKER_LOG)
    assert values["MACHINE"] == "qemux86-64" and values["TUNE_FEATURES"] == "m64 core2"
    assert values["NATIVELSBSTRING"] == "debian-12" and values["TARGET_FPU"] == ""
    assert layers == [{"name": "meta", "revision": "scarthgap:0123abcd"},
                      {"name": "meta-poky", "revision": "scarthgap:0123abcd"},
                      {"name": "meta-equivcache", "revision": "main:4567ef01"}]
    assert build.parse_build_configuration("no such block\n") == ({}, [])


def test_parse_build_configuration_without_target_fpu():
    """wrynose's BUILDCFG_VARS has no TARGET_FPU: the layers follow the last variable."""
    log = COOKER_LOG.replace('TARGET_FPU           = ""\n', "").replace('"2.8.1"', '"2.18.0"')
    values, layers = build.parse_build_configuration(log)
    assert "TARGET_FPU" not in values and values["TUNE_FEATURES"] == "m64 core2"
    assert values["BB_VERSION"] == "2.18.0"
    assert [layer["name"] for layer in layers] == ["meta", "meta-poky", "meta-equivcache"]


def test_newest_build_configuration(tmp_path):
    old = tmp_path / "tmp" / "log" / "cooker" / "qemux86-64" / "1.log"
    new = tmp_path / "tmp-glibc" / "log" / "cooker" / "qemux86-64" / "2.log"
    touch(str(old), COOKER_LOG.replace("qemux86-64", "qemuarm").encode())
    touch(str(new), COOKER_LOG.encode())
    os.utime(old, (1, 1))
    values, layers, path = build.newest_build_configuration([str(tmp_path / "tmp"), str(tmp_path / "tmp-glibc")])
    assert values["MACHINE"] == "qemux86-64" and path == str(new)
    assert build.newest_build_configuration([str(tmp_path / "nothing")]) is None


def test_write_atomic_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "doc.json")
    files.write_json(path, {"a": 1}, 0o600)
    files.write_json(path, {"a": 2}, 0o600)
    assert json.load(open(path)) == {"a": 2}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(str(tmp_path)) == ["doc.json"]


def test_index_schema(tmp_path):
    """publish's index validates against its published schema; a wrong one does not."""
    import jsonschema
    from equivcache.catalog import SCHEMA
    with open(SCHEMA) as f:
        schema = json.load(f)
    sstate, siginfo = str(tmp_path / "sstate"), str(tmp_path / "siginfo")
    obj = "ad/72/sstate:a::1.0:r0::12:%s_populate_sysroot.tar.zst" % H
    touch(os.path.join(sstate, obj), b"12345")
    touch(os.path.join(sstate, obj + ".siginfo"))
    touch(os.path.join(siginfo, "x86_64-linux/a/1.0-r0.do_compile.sigdata." + H))
    doc = build_index(sstate, siginfo_dir=siginfo)
    assert len(doc["objects"]) == 1 and len(doc["signatures"]) == 1
    jsonschema.validate(doc, schema)
    doc["objects"][0]["size"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_regular_files(tmp_path):
    """files.regular_files: os.walk()'s order, each directory sorted; no symbolic link given or followed."""
    for rel in ("b/2", "b/1", "a/c/3", "top"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    os.symlink(str(tmp_path / "top"), str(tmp_path / "b" / "link"))
    os.symlink(str(tmp_path / "a"), str(tmp_path / "dirlink"))
    walked = [os.path.relpath(os.path.join(top, name), tmp_path) for top, dirs, names in os.walk(tmp_path)
              for name in sorted(names) if not dirs.sort() and not os.path.islink(os.path.join(top, name))]
    assert [(rel, st.st_size) for rel, st in files.regular_files(str(tmp_path))] == \
        [("top", 3), ("a/c/3", 5), ("b/1", 3), ("b/2", 3)] == [(rel, len(rel)) for rel in walked]
    assert list(files.regular_files(str(tmp_path / "absent"))) == []


def test_upload_into_a_directory_gc_removed(tmp_path):
    """An upload into a directory another process (gc) removed after this
    storage made it: made again; a symbolic link on the way is refused."""
    import hashlib
    import io
    from equivcache.server.store.local import LocalStorage
    from equivcache.server.store.storage import Refused
    storage = LocalStorage(str(tmp_path))
    obj = "sstate-cache/ad/72/sstate:a::1.0:r0::12:%s_unpack.tar.zst" % H
    body = b"object"
    digest = hashlib.sha256(body).hexdigest()
    assert storage.put_stream(obj, io.BytesIO(body), len(body), digest, 1000) is False
    LocalStorage(str(tmp_path)).remove(obj)   # gc's, in another process: sstate-cache/ad/ goes
    assert not (tmp_path / "sstate-cache" / "ad").exists()
    assert storage.put_stream(obj, io.BytesIO(body), len(body), digest, 1000) is False
    assert (tmp_path / obj).read_bytes() == body and os.stat(tmp_path / obj).st_mtime == 1000
    assert storage.put_stream(obj, io.BytesIO(body), len(body), digest, 2000) is True
    os.symlink(str(tmp_path), str(tmp_path / "sstate-cache" / "ae"))
    with pytest.raises(Refused, match="ae is a symbolic link"):
        storage.put_stream(obj.replace("/ad/72/", "/ae/72/"), io.BytesIO(body), len(body), digest, 1000)
    assert sorted(os.listdir(tmp_path / "sstate-cache" / "ad" / "72")) == [os.path.basename(obj)]
    # What it remembers is bounded: past CHECKED directories, it starts again.
    import equivcache.server.store.local as local
    storage.checked.update(str(n) for n in range(local.CHECKED))
    assert storage.put_stream(obj.replace("/ad/72/", "/af/72/"), io.BytesIO(body), len(body), digest, 1000) is False
    assert len(storage.checked) < 4


def test_merge_lanes():
    """A merge's rows over its connections: those sharing a task or an output (even through another row)
    on one connection, in their order; the others shared out."""
    from equivcache.server.hashequiv.database import _lanes

    def row(taskhash, outhash, method="m"):
        return {"method": method, "taskhash": taskhash, "outhash": outhash}
    rows = [row("t1", "o1"), row("t2", "o2"), row("t3", "o1"), row("t4", "o4"), row("t2", "o5"),
            row("t5", "o5"), row("t6", "o6"), row("t6", "o6", method="other"), row("t7", "o4")]
    lanes = _lanes(rows, 4)
    assert sorted(r for lane in lanes for r in map(rows.index, lane)) == list(range(len(rows)))
    assert [[rows.index(r) for r in lane] for lane in lanes] == [[0, 2, 7], [1, 4, 5], [3, 8], [6]]
    assert _lanes(rows, 1) == [rows] and _lanes([], 4) == [[], [], [], []]
