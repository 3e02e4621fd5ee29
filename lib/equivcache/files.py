# SPDX-License-Identifier: MIT
#
# Writing files so that a reader sees the old or the new one, never a part;
# listing a tree's regular files.

import json
import os
import tempfile


def write_atomic(path, text, mode=0o644):
    """Replace path with text (str or bytes) so that a reader sees the old or the new file, never a part."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_bytes(doc, compact=False):
    """A document as write_json() writes it; compact: on one line, for the
    large documents programs read (a cache's index.json: json's indentation
    is its pure-Python encoder, three times the C encoder's time)."""
    if compact:
        return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def write_json(path, doc, mode=0o644):
    write_atomic(path, json_bytes(doc), mode)


def regular_files(root):
    """(path relative to root, os.lstat() result) of every regular file under
    root, symbolic links neither followed nor given, in os.walk()'s order with
    each directory sorted: one scandir(3) per directory, its entries' types
    from it and one lstat per file (os.walk() and an lstat of each path cost
    two to three times as much on a cache's tree of small directories)."""
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                entries = sorted(entries, key=lambda e: e.name)
        except OSError:   # gone, or not a directory: nothing under it, as os.walk()
            continue
        subdirectories = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry)
            elif entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield prefix + entry.name, st
        stack.extend((prefix + e.name + "/", e.path) for e in reversed(subdirectories))
