# SPDX-License-Identifier: MIT
#
# What gc evicts together, and in which order: an object's group is its
# .tar.zst, .siginfo and .sig and the signature data siginfo/ holds for the
# same recipe, task and unihash; signature data of tasks without an object
# form groups of their own. Least recently used first. No bb import.

from equivcache import names

DAY = 86400


class Group:
    """What goes together: an object's files (paths relative to the cache)."""

    __slots__ = ("unihash", "files", "size", "used", "published")

    def __init__(self, unihash):
        self.unihash, self.files, self.size, self.used, self.published = unihash, [], 0, 0, 0

    def add(self, rel, stored):
        self.files.append(rel)
        self.size += stored.size
        self.used = max(self.used, stored.used)
        self.published = max(self.published, stored.written)


def group_files(sstate, siginfo):
    """The groups of the files of sstate-cache/ and of siginfo/ ([Stored]
    each): ({stem: object group}, [signature-only groups])."""
    objects = {}
    for stored in sstate:
        parsed = names.parse_sstate_name(stored.rel)
        if parsed is None:
            continue
        kind = parsed[3]
        stem = stored.rel[:-len("." + kind)] if kind != "object" else stored.rel
        group = objects.setdefault(stem, Group(None))
        if kind == "object":
            group.unihash = parsed[2]
        group.add("sstate-cache/" + stored.rel, stored)
    by_task = {}
    for stem, group in objects.items():
        recipe, task, unihash, _ = names.parse_sstate_name(stem)
        by_task[(recipe, task, unihash)] = group
    alone = []
    for stored in siginfo:
        key = names.parse_sigdata_name(stored.rel)
        if key is None:
            continue
        group = by_task.get(key)
        if group is None:
            group = Group(None)
            alone.append(group)
        group.add("siginfo/" + stored.rel, stored)
    return objects, alone


def plan(groups, now, max_size=None, older_than=None, protect_since=None):
    """(evicted, kept, protected count): least recently used first."""
    evicted, kept, protected = [], [], 0
    total = sum(g.size for g in groups)
    for group in sorted(groups, key=lambda g: g.used):
        if protect_since is not None and group.published >= protect_since:
            protected += 1
            kept.append(group)
            continue
        old = older_than is not None and group.used < now - older_than * DAY
        big = max_size is not None and total > max_size
        if old or big:
            evicted.append(group)
            total -= group.size
        else:
            kept.append(group)
    return evicted, kept, protected
