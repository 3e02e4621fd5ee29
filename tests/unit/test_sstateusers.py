# SPDX-License-Identifier: MIT
#
# Who uses an SSTATE_DIR (sstateusers.py): the records builds leave there,
# and network file systems found in a mounts table.

import os

from equivcache import sstateusers


def test_records(tmp_path):
    sstate = str(tmp_path / "sstate")
    dbs = []
    for name in ("a", "b"):
        db = tmp_path / name / "cache" / "hashserv.db"
        db.parent.mkdir(parents=True)
        db.write_text("")
        dbs.append(str(db))
    assert sstateusers.others(sstate, str(tmp_path / "a"), dbs[0]) == []
    sstateusers.note(sstate, str(tmp_path / "a"), dbs[0], now=1)
    assert sstateusers.others(sstate, str(tmp_path / "a"), dbs[0]) == []   # itself
    assert sstateusers.others(sstate, str(tmp_path / "b"), dbs[1]) == [(str(tmp_path / "a"), dbs[0])]
    sstateusers.note(sstate, str(tmp_path / "b"), dbs[1], now=2)
    os.unlink(dbs[0])   # a build that is gone is dropped
    assert sstateusers.others(sstate, str(tmp_path / "b"), dbs[1]) == []
    assert len(os.listdir(os.path.join(sstate, sstateusers.DIRECTORY))) == 1


def test_unwritable_sstate_dir_is_quiet(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sstateusers.note(str(blocker), "/work/build", "/work/build/cache/hashserv.db")
    assert sstateusers.others(str(blocker), "/work/build", "/x") == []


def test_network_filesystem(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nnas:/export /srv nfs4 rw 0 0\n"
                      "tmpfs /srv/local tmpfs rw 0 0\n//server/share /mnt/my\\040share cifs rw 0 0\n")
    assert sstateusers.network_filesystem("/srv/sstate-cache", str(mounts)) == "nfs4"
    assert sstateusers.network_filesystem("/srv/local/sstate", str(mounts)) == ""
    assert sstateusers.network_filesystem("/srvx/sstate", str(mounts)) == ""
    assert sstateusers.network_filesystem("/mnt/my share/sstate", str(mounts)) == "cifs"
    assert sstateusers.network_filesystem("/srv", str(tmp_path / "none")) == ""
