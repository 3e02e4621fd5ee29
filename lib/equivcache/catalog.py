# SPDX-License-Identifier: MIT
#
# The cache's catalog, index.json: each object and task signature a cache
# holds, by recipe, task and unihash, as equivcache-server publish writes it
# beside the objects (schema: schemas/index-v2.json; the file keeps its
# served name and format "equivcache-index" for existing clients). Read by the
# build report (which misses are on the mirror under another unihash) and
# by equivcache-doctor (which signatures the mirror has). Pure Python: no
# bb import.

import json
import os

from equivcache import probe
from equivcache.formatting import utc_iso
from equivcache.names import parse_sigdata_name, parse_sstate_name, sigdata_files, sstate_files

NAME = "index.json"
FORMAT = "equivcache-index"
VERSION = 2
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas", "index-v%d.json" % VERSION)


def build(sstate_dir, generated=None, siginfo_dir=None, exclude=(), exclude_signatures=()):
    """The index document of what sstate_dir holds: one entry per recipe,
    task and unihash, with the path (relative to sstate-cache/) and size of
    its object ("" and 0 when only the signature data is there, as for tasks
    without an sstate object) and the path of its signature data ("" if none).
    With siginfo_dir (the cache's siginfo/), "signatures" lists the signature
    data of every task there, paths relative to siginfo/. Files in exclude
    (relative to sstate_dir) and exclude_signatures (relative to siginfo_dir)
    are left out: gc writes the index before it removes them."""
    return build_from(((rel, size) for rel, size, _ in sstate_files(sstate_dir)),
                      ((rel, size) for rel, size, _ in (sigdata_files(siginfo_dir) if siginfo_dir else ())),
                      generated, exclude, exclude_signatures)


def build_from(sstate, siginfo, generated=None, exclude=(), exclude_signatures=(), parse=parse_sstate_name):
    """build() of listings, (path, size) of the files of sstate-cache/ and
    of siginfo/, whatever holds them (a directory, a bucket); parse: what
    parse_sstate_name() says of a path (or what a caller kept of it)."""
    entries = {}
    for rel, size in sstate:
        parsed = parse(rel)
        if parsed is None or parsed[3] == "sig" or rel in exclude:
            continue
        recipe, task, unihash, kind = parsed
        stem = rel[:-len(".siginfo")] if kind == "siginfo" else rel
        entry = entries.setdefault(stem, {"recipe": recipe, "task": task, "unihash": unihash,
                                          "path": "", "size": 0, "siginfo": ""})
        if kind == "object":
            entry["path"], entry["size"] = rel, size
        else:
            entry["siginfo"] = rel
    signatures = []
    for rel, _ in siginfo:
        parsed = parse_sigdata_name(rel)
        if parsed is not None and rel not in exclude_signatures:
            signatures.append({"recipe": parsed[0], "task": parsed[1], "unihash": parsed[2], "path": rel})
    return {
        "format": FORMAT,
        "version": VERSION,
        "generated": generated or utc_iso(),
        "objects": [entries[stem] for stem in sorted(entries)],
        "signatures": signatures,
    }


def read_first(locations, timeout, limit):
    """(document, URL) of the first of `locations` that holds an index, and
    [why each one before it did not]; (None, None, reasons) if none does."""
    errors = []
    for url in locations:
        try:
            doc = json.loads(probe.fetch(url, timeout, limit=limit))
        except (OSError, ValueError) as e:
            errors.append("%s: %s" % (url, e))
            continue
        if isinstance(doc, dict) and doc.get("format") == FORMAT:
            return doc, url, errors
        errors.append("%s: not an equivcache index" % url)
    return None, None, errors


def unihashes_by_task(doc):
    """{(recipe, task): {unihash, ...}} of the objects an index lists."""
    found = {}
    for obj in doc.get("objects", []):
        if obj.get("path"):
            found.setdefault((obj["recipe"], obj["task"]), set()).add(obj["unihash"])
    return found
