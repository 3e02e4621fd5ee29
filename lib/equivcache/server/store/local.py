# SPDX-License-Identifier: MIT
#
# A cache's files in a local directory (the storage protocol, storage.py):
# what publish writes to CACHE_DIR and serve's http mirror serves. Files
# appear under their published name only whole: written under a hidden
# temporary name in the same directory, then renamed (or linked, for
# uploads: never replacing a published file). "Used" is a file's atime or
# mtime (publish sets both; the mirror sets atime; under nginx the kernel's
# relatime does, daily). No bb import.

import contextlib
import errno
import functools
import os
import secrets
import shutil
import stat

from equivcache import pathkeys
from equivcache.files import write_atomic
from equivcache.pathkeys import listed_stats
from equivcache.server.store.storage import Refused, Storage, Stored, copy_verified

# Fetcher state in DL_DIR that a mirror must not copy: locks, done stamps,
# and the VCS clones (a mirror serves their tarballs, BB_GENERATE_MIRROR_TARBALLS).
DOWNLOAD_SKIP_DIRS = ("git2", "gitsm", "svn", "hg", "bzr", "cvs", "repo", "npm2", "crate", "gomod")
DOWNLOAD_SKIP_SUFFIXES = (".lock", ".done", ".tmp")
# How many directories an upload's storage remembers as checked (LocalStorage.checked).
CHECKED = 20000


def download_files(dl_dir):
    """The files of a DL_DIR a mirror serves: (relative path, size)."""
    for top, dirs, files in os.walk(dl_dir):
        if top == dl_dir:
            dirs[:] = [d for d in dirs if d not in DOWNLOAD_SKIP_DIRS]
        dirs.sort()
        for name in sorted(files):
            if name.endswith(DOWNLOAD_SKIP_SUFFIXES) or name.startswith("."):
                continue
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            yield os.path.relpath(path, dl_dir), os.path.getsize(path)


def sync_directory(directory):
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=None)   # find_library() runs ldconfig: once a process
def _libc():
    """The C library, for syncfs(2); None where it cannot be loaded."""
    try:
        import ctypes
        import ctypes.util
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except (OSError, AttributeError):
        return None


class LocalStorage(Storage):
    """The files of a cache directory on a local file system."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.local_root = self.root
        # The directories _parent() found to be directories, or made: a
        # batch's files ask once. One gone since (gc's) is made again. At
        # most CHECKED of them (a served cache's two-level directories alone
        # are 65,536 per NATIVELSBSTRING): past that, forgotten and asked again.
        self.checked = set()

    def path(self, rel):
        return os.path.join(self.root, *rel.split("/"))

    def sizes(self, rels):
        found = {}
        for rel in rels:
            try:
                found[rel] = os.path.getsize(self.path(rel))
            except OSError:
                found[rel] = None
        return found

    def files(self, area):
        return [Stored(rel, st.st_size, max(st.st_atime, st.st_mtime), st.st_mtime)
                for rel, st in listed_stats(os.path.join(self.root, area))]

    def get_bytes(self, rel):
        try:
            with open(self.path(rel), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put_bytes(self, rel, data):
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, data)

    def touch(self, rel, when):
        os.utime(self.path(rel), (when, when))

    def _parent(self, rel):
        """The directory of rel, made where absent; refused if a symbolic link
        (or anything but a directory) is on the way. rel's components are
        checked names (no "." or ".."), so nothing leads outside its area."""
        directory = self.root
        for part in rel.split("/")[:-1]:
            directory = os.path.join(directory, part)
            if directory in self.checked:
                continue
            try:
                os.mkdir(directory)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(directory).st_mode):
                    raise Refused(400, "%s: %s is a symbolic link or a file, not a directory"
                                  % (rel, os.path.relpath(directory, self.root)))
            if len(self.checked) >= CHECKED:
                self.checked.clear()
            self.checked.add(directory)
        return directory

    def _temporary(self, directory):
        return os.path.join(directory, ".upload-%s.tmp" % secrets.token_hex(8))

    def put_file(self, rel, source, when):
        tmp = self._temporary(self._parent(rel))
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
            os.utime(tmp, (when, when))
            os.replace(tmp, self.path(rel))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_stream(self, rel, stream, length, sha256, when, check=None, replace=False, sync=True):
        """To a temporary name, checked, synced (or left to sync()), then
        linked under rel (renamed over it if replace, or if what holds the
        name has another size: a file a crash cut short)."""
        directory = self._parent(rel)
        tmp = self._temporary(directory)
        try:
            try:
                f = open(tmp, "x+b")
            except FileNotFoundError:   # its directory removed (by gc) since _parent() made it
                self.checked.clear()
                f = open(self._temporary(self._parent(rel)), "x+b")
                tmp = f.name
            try:
                with f:
                    copy_verified(rel, stream, length, sha256, f)
                    if sync:
                        os.fsync(f.fileno())
                    if check:
                        f.seek(0)
                        check(f)
                    os.fchmod(f.fileno(), 0o644)
                    os.utime(f.fileno(), (when, when))
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise Refused(507, "%s: no space left on the cache's disk" % rel)
                raise
            if replace:
                had = os.path.exists(self.path(rel))
                os.replace(tmp, self.path(rel))
                return had
            try:
                os.link(tmp, self.path(rel))   # never replaces a published file
            except FileExistsError:
                if os.path.getsize(self.path(rel)) == length:
                    return True
                os.replace(tmp, self.path(rel))
            if sync:
                sync_directory(directory)
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def sync(self):
        """One syncfs(2) of the cache's file system (os.sync() where there is none)."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc() is None or _libc().syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def append(self, rel, content, kept):
        """In place: past `kept`, an interrupted append is overwritten."""
        with open(self.path(rel), "r+b") as f:
            f.seek(kept)
            f.write(content[kept:])
            f.truncate()
            f.flush()
            os.fsync(f.fileno())

    def remove(self, rel):
        """Unlink rel, then the directories it leaves empty (below its area)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(rel))
        parts = rel.split("/")[:-1]
        while len(parts) > 1:
            self.checked.discard(self.path("/".join(parts)))
            try:
                os.rmdir(self.path("/".join(parts)))
            except OSError:
                break
            parts.pop()

    def free_space(self):
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def update_sstate_index(root, exclude=()):
    """pathkeys.update() of the cache directory root's sstate-cache/: the
    sstate index as publish writes it (for tests and benchmarks that make a
    cache directory by hand)."""
    storage = LocalStorage(root)
    return pathkeys.update(storage, [f.rel for f in storage.files("sstate-cache")], exclude=exclude)[:3]
