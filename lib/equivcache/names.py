# SPDX-License-Identifier: MIT
#
# The names of sstate objects and of task signature data, and walks over
# the trees that hold them (SSTATE_DIR, STAMPS_DIR, the cache's siginfo/).
# Pure Python: no bb import.

import os
import re

from equivcache.files import regular_files


# The suffixes of an sstate object, of its signature data and of its signature.
_SSTATE_SUFFIXES = (".tar.zst.siginfo", ".tar.zst.sig", ".tar.zst")


def parse_sstate_name(relpath):
    """(recipe, task, unihash, kind) of an sstate file's path relative to
    SSTATE_DIR, kind being "object", "siginfo" or "sig"; None for any other
    file. Names are sstate.bbclass's generate_sstatefn():
    [NATIVELSBSTRING/]xx/yy/sstate:PN:ARCH:PV:PR:PKGARCH:VERSION:UNIHASH_TASK.tar.zst"""
    name = os.path.basename(relpath)
    if not name.startswith("sstate:"):
        return None
    for suffix, kind in zip(_SSTATE_SUFFIXES, ("siginfo", "sig", "object")):
        if name.endswith(suffix):
            stem = name[:-len(suffix)]
            break
    else:
        return None
    fields = stem.split(":")
    if len(fields) < 8 or not fields[1]:
        return None
    unihash, sep, task = fields[-1].partition("_")
    if not sep or not unihash or not task:
        return None
    return fields[1], "do_" + task, unihash, kind


def _named_files(root, parse):
    """(relative path, size, parse(relative path)) of every regular file
    under root whose name parse() understands (it returns None for others)."""
    for rel, st, parsed in named_stats(root, parse):
        yield rel, st.st_size, parsed


def named_stats(root, parse):
    """_named_files() with each file's os.stat() result instead of its size."""
    for rel, st in regular_files(root):
        parsed = parse(rel)
        if parsed is not None:
            yield rel, st, parsed


def sstate_files(sstate_dir):
    """Every sstate file under sstate_dir: (relative path, size, parsed name)."""
    return _named_files(sstate_dir, parse_sstate_name)


def nativelsbstrings(paths):
    """The NATIVELSBSTRING directories (native objects live under them) of
    the paths of an sstate directory's files: its top directories of more
    than two characters, hidden ones left out."""
    tops = {p.split("/", 1)[0] for p in paths if "/" in p}
    return sorted(t for t in tops if len(t) > 2 and not t.startswith("."))


# A task's signature data in STAMPS_DIR, as bitbake's dump_sigtask() names it:
# STAMPS_DIR/MULTIMACH_TARGET_SYS/PN/[PE_]PV-PR.do_TASK.sigdata.UNIHASH
_SIGDATA = re.compile(r"^.+\.(do_[^.]+)\.sigdata\.([0-9a-f]{8,})$")


def parse_sigdata_name(relpath):
    """(recipe, task, unihash) of a sigdata file's path under STAMPS_DIR, or None."""
    parts = relpath.replace(os.sep, "/").split("/")
    m = _SIGDATA.match(parts[-1])
    if not m or len(parts) < 2:
        return None
    return parts[-2], m.group(1), m.group(2)


def sigdata_files(stamps_dir):
    """Every task signature file under a STAMPS_DIR (or the cache's siginfo/):
    (relative path, size, (recipe, task, unihash))."""
    return _named_files(stamps_dir, parse_sigdata_name)
