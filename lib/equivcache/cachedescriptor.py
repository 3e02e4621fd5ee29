# SPDX-License-Identifier: MIT
#
# The descriptor of the cache a build uses (EQUIVCACHE_SERVER, or beside
# its sstate mirrors): where to look for it, fetched or else the copy kept
# from the last fetch, and what a descriptor fetched this parse spares the
# build asking again (the mirror's probe, the sstate index's head).
# Cooker-side, for configcheck.py, sstatecheck.py and buildreport.py.

import json
import os
import time
import urllib.parse

import bb

from equivcache import descriptor as desc
from equivcache import probe, rulebase
from equivcache.mirrors import parse_mirrors


def state_dir(d):
    return os.path.join(d.getVar("PERSISTENT_DIR") or d.getVar("TOPDIR"), "equivcache")


def descriptor_locations(d, server, name=desc.NAME):
    """Where to look for the descriptor (or another file of the cache's
    root, such as index.json): EQUIVCACHE_SERVER's root, or the directory
    above each configured sstate mirror."""
    if server:
        return [server.rstrip("/") + "/" + name]
    found = []
    for mirror in rulebase.real_mirrors(parse_mirrors(d.getVar("SSTATE_MIRRORS"))):
        if mirror.scheme in ("http", "https", "file"):
            parent = mirror.root.rsplit("/", 1)[0]
            found.append(parent + "/" + name)
    return list(dict.fromkeys(found))


# The descriptor this parse fetched (source URL, document): what it says
# spares the requests that would ask it again (the mirror's probe, the
# sstate index's head). A cached copy is never put here.
_fresh = {}


def fresh_index_head(index_url):
    """The head.json of the sstate index at index_url as the descriptor just fetched from the same cache
    carries it, else None."""
    source, doc = _fresh.get("source"), _fresh.get("doc") or {}
    if source and "sstate_index" in doc and index_url == source.rsplit("/", 1)[0] + "/sstate-index/":
        return doc["sstate_index"]
    return None


def answered_by_descriptor(needed):
    """{probe: None} of the ("http", URL) probes of the origin (scheme, host, port) the descriptor just
    answered from: that server answers, and asking it again is one more round trip."""
    source = _fresh.get("source")
    if not source or urllib.parse.urlsplit(source).scheme not in ("http", "https"):
        return {}
    origin = urllib.parse.urlsplit(source)[:2]
    return {p: None for p in needed if p[0] == "http" and urllib.parse.urlsplit(p[1])[:2] == origin}


def find_descriptor(d, server, timeout):
    """(descriptor, source URL, error): fetched, else the cached copy of the same source."""
    _fresh.clear()
    cache = os.path.join(state_dir(d), "descriptor.json")
    errors = []
    invalid = False
    locations = descriptor_locations(d, server)
    for url in locations:
        try:
            doc = desc.loads(probe.fetch(url, timeout).decode("utf-8", "replace"), source=url)
        except OSError as e:
            errors.append("%s: %s" % (url, e))
            continue
        except desc.DescriptorError as e:
            errors.append(str(e))
            invalid = True
            continue
        bb.utils.mkdirhier(os.path.dirname(cache))
        with open(cache + ".new", "w") as f:
            json.dump({"source": url, "fetched": time.time(), "descriptor": doc}, f)
        os.replace(cache + ".new", cache)
        _fresh.update(source=url, doc=doc)
        return doc, url, None
    if not errors:
        return None, None, None
    try:
        with open(cache) as f:
            cached = json.load(f)
        if cached.get("source") in locations and not desc.validate(cached.get("descriptor")):
            return cached["descriptor"], cached["source"], "%s; using the copy fetched %s" % (
                "; ".join(errors), time.strftime("%Y-%m-%d %H:%M", time.localtime(cached.get("fetched", 0))))
    except (OSError, ValueError, AttributeError):
        pass
    # Without EQUIVCACHE_SERVER a mirror need not publish a descriptor: only
    # an invalid one is worth a word.
    return None, None, "; ".join(errors) if server or invalid else None
