# SPDX-License-Identifier: MIT
#
# The mirror availability check of equivcache.bbclass (BB_HASHCHECK_FUNCTION):
# stock sstate_checkhashes, except that a mirror with an sstate index
# (lib/equivcache/pathkeys.py, published by equivcache-server) is answered
# from that index in at most two requests instead of one per object. Mirrors
# without an index get stock's own per-object check, for the objects no
# indexed mirror has. Cooker only.

import hashlib
import os

import bb
import bb.data
import bb.event
import bb.runqueue

from equivcache import cachedescriptor, pathkeys
from equivcache.mirrors import parse_mirrors

# Tasks whose object is named by their shared spec (sstate_checkhashes).
SHARED_SPEC_TASKS = ("fetch", "unpack", "patch", "populate_lic", "preconfigure")
PROGRESS_MESSAGE = "Checking sstate mirror object availability"

# Per cooker: index URL -> warned already; tid -> the index that answered for it.
_warned = set()
_answered = {}


def enabled(d):
    return bb.utils.to_boolean(d.getVar("EQUIVCACHE_MIRROR_INDEX"), True)


def sstate_object(sq_data, tid, d, siginfo=False):
    """The path of tid's sstate object relative to SSTATE_DIR, as
    sstate_checkhashes computes it (sstate.bbclass's generate_sstatefn)."""
    splithashfn = sq_data["hashfn"][tid].split(" ")
    spec = splithashfn[1]
    extrapath = d.getVar("NATIVELSBSTRING") + "/" if splithashfn[0] == "True" else ""
    tname = bb.runqueue.taskname_from_tid(tid)[3:]
    if tname in SHARED_SPEC_TASKS and splithashfn[2]:
        spec = splithashfn[2]
        extrapath = ""
    name = bb.utils.better_eval("generate_sstatefn(spec, unihash, tname, siginfo, d)",
                                {"spec": spec, "unihash": sq_data["unihash"][tid], "tname": tname,
                                 "siginfo": siginfo, "d": d})
    return extrapath + name


def indexable(mirror, network):
    """Can this SSTATE_MIRRORS entry be answered from an index? Only the
    plain form every guide uses ("file://.* URL/PATH"), over a scheme the
    index can be read with; other forms keep stock's check."""
    if mirror.pattern != "file://.*" or not mirror.location.endswith("/PATH"):
        return False
    if mirror.scheme == "file":
        return True
    return network and mirror.scheme in ("http", "https")


def warn_once(url, message):
    if url not in _warned:
        _warned.add(url)
        bb.warn(message)


def load_indexes(mirrors, d):
    """{mirror: pathkeys.Fetched} of the indexed mirrors that have a usable index."""
    timeout = float(d.getVar("EQUIVCACHE_PROBE_TIMEOUT") or 2)
    cache_root = os.path.join(d.getVar("PERSISTENT_DIR"), "equivcache", "sstate-index")
    loaded = {}
    for mirror in mirrors:
        url = pathkeys.index_url(mirror.root)
        cache_dir = os.path.join(cache_root, hashlib.sha256(url.encode()).hexdigest()[:16])
        try:
            loaded[mirror] = pathkeys.load(mirror.root, cache_dir, timeout,
                                           cachedescriptor.fresh_index_head(url))
        except pathkeys.Unavailable as e:
            if e.quiet:
                bb.debug(1, "equivcache: no sstate index for %s (%s)" % (mirror.url, e))
            else:
                warn_once(url, "equivcache: the sstate index %s cannot be used (%s): mirror %s is checked "
                               "object by object instead" % (url, e, mirror.root))
            continue
        fetched = loaded[mirror]
        bb.debug(1, "equivcache: sstate index %s: %d objects, %d request(s), %d bytes"
                 % (url, fetched.head["entries"], fetched.requests, fetched.received))
    return loaded


class _WithoutCheckhashes:
    """The signature handler as stock's check sees it while it checks part
    of the objects: its checkhashes hook runs once, on the whole result."""

    def __init__(self, siggen):
        self._siggen = siggen

    def __getattr__(self, name):
        if name == "checkhashes":
            raise AttributeError(name)
        return getattr(self._siggen, name)


def checkhashes(stock, sq_data, d, siginfo=False, currentcount=0, summary=True, **kwargs):
    """BB_HASHCHECK_FUNCTION: stock's results, indexed mirrors answered from their index."""
    parsed = parse_mirrors(d.getVar("SSTATE_MIRRORS"))
    # A variable bitbake would read otherwise than parse_mirrors: stock decides.
    unreadable = [p for p in parsed.problems if p[0] in ("odd-words", "bad-regex")]
    if not enabled(d) or not parsed.mirrors or unreadable:
        return stock(sq_data, d, siginfo=siginfo, currentcount=currentcount, summary=summary, **kwargs)
    network = not bb.utils.to_boolean(d.getVar("BB_NO_NETWORK")) or \
        bb.utils.to_boolean(d.getVar("SSTATE_MIRROR_ALLOW_NETWORK"))
    candidates = [m for m in parsed.mirrors if indexable(m, network)]
    with bb.utils.environment(**bb.fetch2.get_fetcher_environment(d)):
        indexes = load_indexes(candidates, d) if candidates else {}
    if not indexes:
        return stock(sq_data, d, siginfo=siginfo, currentcount=currentcount, summary=summary, **kwargs)
    others = [m for m in parsed.mirrors if m not in indexes]

    import oe.utils
    sstate_dir = d.getVar("SSTATE_DIR")
    found, missed, paths = set(), set(), {}
    for tid in sq_data["hash"]:
        paths[tid] = d.expand(sstate_object(sq_data, tid, d, siginfo))
        local = os.path.join(sstate_dir, paths[tid])
        if os.path.exists(local):
            oe.utils.touch(local)
            found.add(tid)
            bb.debug(2, "SState: Found valid sstate file %s" % local)
        else:
            missed.add(tid)
    found_local = len(found)

    progress = len(missed) >= 100
    if progress:
        bb.event.fire(bb.event.ProcessStarted(PROGRESS_MESSAGE, len(missed)), d)
    wanted = {}
    for tid in missed:
        wanted.setdefault(pathkeys.key_int(paths[tid]), []).append(tid)
    for mirror, fetched in indexes.items():
        for k in set(wanted).intersection(fetched.keys):
            for tid in wanted.pop(k):
                found.add(tid)
                missed.discard(tid)
                _answered[tid] = (fetched.url, paths[tid], os.path.join(sstate_dir, paths[tid]))
                bb.debug(2, "SState: %s lists %s" % (fetched.url, paths[tid]))
    if progress:
        bb.event.fire(bb.event.ProcessProgress(PROGRESS_MESSAGE, len(found) - found_local), d)
        bb.event.fire(bb.event.ProcessFinished(PROGRESS_MESSAGE), d)

    if missed and others:
        found |= check_others(stock, sq_data, missed, others, d, siginfo)
        missed -= found

    if "toaster" in (d.getVar("INHERIT") or "").split():
        evdata = {"missed": [], "found": []}
        for key, tids in (("missed", missed), ("found", found)):
            for tid in tids:
                evdata[key].append((bb.runqueue.fn_from_tid(tid), bb.runqueue.taskname_from_tid(tid),
                                    sq_data["unihash"][tid], d.expand(sstate_object(sq_data, tid, d))))
        bb.event.fire(bb.event.MetadataEvent("MissedSstate", evdata), d)

    if summary:
        total = len(sq_data["hash"])
        complete = (len(found) + currentcount) / (total + currentcount) * 100 if currentcount else 0
        match = len(found) / total * 100 if total else 0
        bb.plain("Sstate summary: Wanted %d Local %d Mirrors %d Missed %d Current %d (%d%% match, %d%% complete)" %
                 (total, found_local, len(found) - found_local, len(missed), currentcount, match, complete))

    if hasattr(bb.parse.siggen, "checkhashes"):
        bb.parse.siggen.checkhashes(sq_data, missed, found, d)
    return found


def check_others(stock, sq_data, tids, mirrors, d, siginfo):
    """Stock's per-object check of `tids` on the mirrors without an index:
    its summary, toaster event and signature handler hook left to the caller."""
    sub = {name: ({tid: v[tid] for tid in tids if tid in v} if isinstance(v, dict) else v)
           for name, v in sq_data.items()}
    localdata = bb.data.createCopy(d)
    localdata.setVar("SSTATE_MIRRORS", " ".join("%s %s" % (m.pattern, m.url) for m in mirrors))
    localdata.setVar("INHERIT", " ".join(w for w in (d.getVar("INHERIT") or "").split() if w != "toaster"))
    siggen = bb.parse.siggen
    bb.parse.siggen = _WithoutCheckhashes(siggen)
    try:
        return set(stock(sub, localdata, siginfo=siginfo, currentcount=0, summary=False))
    finally:
        bb.parse.siggen = siggen


def on_build_event(e):
    """sceneQueueTaskFailed of an object an index listed and the mirror did not give: the index is out
    of date. One the mirror gave (in SSTATE_DIR now) failed for another reason, which OE-core's own
    warning says (a signature that does not verify, a damaged archive): nothing to add."""
    if isinstance(e, bb.runqueue.sceneQueueTaskFailed):
        url, path, local = _answered.get(e.taskid, (None, None, None))
        if url and not os.path.exists(local):
            warn_once("lost " + url, "equivcache: the sstate index %s lists %s but the mirror did not give it, "
                      "so %s runs instead of being restored. The index is out of date: publish the cache again "
                      "(equivcache-server publish), or set EQUIVCACHE_MIRROR_INDEX = \"0\"."
                      % (url, path, e.taskname[:-len("_setscene")]))
    elif isinstance(e, bb.event.BuildCompleted):
        _answered.clear()
        _warned.clear()
