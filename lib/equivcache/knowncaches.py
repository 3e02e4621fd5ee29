# SPDX-License-Identifier: MIT
#
# Public sstate mirrors that publish no descriptor, and the hash equivalence
# server whose unihashes name their objects: what rules mirror-without-upstream
# and descriptor-server-mismatch use when the mirror has no equivcache.json.
# The table can grow; EQUIVCACHE_KNOWN_CACHES adds a site's own pairs.
# Pure Python: no bb import.

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownCache:
    name: str
    mirrors: tuple      # mirror roots without scheme: "host/path"
    hashserv: str       # the server to set as BB_HASHSERVE_UPSTREAM
    aliases: tuple = ()  # other addresses of the same server, as older configurations name it


KNOWN = (
    # OE-core's meta/conf/fragments/yocto/sstate-mirror-cdn.conf (wrynose) and
    # the commented lines of poky's local.conf.sample (scarthgap).
    KnownCache(
        name="the Yocto Project's public sstate cache",
        mirrors=("sstate.yoctoproject.org/all", "cdn.jsdelivr.net/yocto/sstate/all"),
        hashserv="wss://hashserv.yoctoproject.org/ws",
        aliases=("hashserv.yoctoproject.org:8686", "hashserv.yocto.io:8687", "ws://hashserv.yoctoproject.org/ws"),
    ),
)


def without_scheme(url):
    return url.split("://", 1)[-1].rstrip("/")


def parse_extra(value):
    """EQUIVCACHE_KNOWN_CACHES: "MIRROR_ROOT=HASHSERV ..." pairs. Returns
    (caches, problems): the pairs that parse, and a message per word that does not."""
    caches, problems = [], []
    for word in (value or "").split():
        mirror, sep, hashserv = word.partition("=")
        if not sep or not mirror or not hashserv:
            problems.append("\"%s\" is not MIRROR_ROOT=HASHSERV" % word)
            continue
        caches.append(KnownCache(name="the sstate cache %s (EQUIVCACHE_KNOWN_CACHES)" % mirror,
                                 mirrors=(without_scheme(mirror),), hashserv=hashserv))
    return caches, problems


def find(mirrors, extra=""):
    """The known cache whose mirror one of `mirrors` (mirrors.Mirror) is, or None."""
    caches, _ = parse_extra(extra)
    for mirror in mirrors:
        root = without_scheme(mirror.root)
        for cache in caches + list(KNOWN):
            if any(root == m or root.startswith(m + "/") for m in cache.mirrors):
                return cache
    return None
