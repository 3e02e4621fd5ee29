# SPDX-License-Identifier: MIT
#
# equivcache-server gc's pure parts: sizes, and the choice of what goes
# (least recently used first, protection of the last publishes).

import os

import pytest

from equivcache.formatting import parse_size
from equivcache.server.store.groups import DAY, Group, plan
from equivcache.server.store.local import LocalStorage


@pytest.mark.parametrize("text, size", [("1024", 1024), ("1K", 1024), ("800M", 800 << 20), ("800MiB", 800 << 20),
                                        ("1.5T", int(1.5 * (1 << 40))), ("500g", 500 << 30), ("0", 0)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "1X", "G"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def group(name, size, used, published=None):
    g = Group(name)
    g.files, g.size, g.used, g.published = [name], size, used, used if published is None else published
    return g


NOW = 1000 * DAY


def test_least_recently_used_first_until_within_bound():
    groups = [group("c", 10, NOW - 1 * DAY), group("a", 10, NOW - 3 * DAY), group("b", 10, NOW - 2 * DAY)]
    evicted, kept, protected = plan(groups, NOW, max_size=15)
    assert [g.unihash for g in evicted] == ["a", "b"] and [g.unihash for g in kept] == ["c"] and protected == 0
    evicted, _, _ = plan(groups, NOW, max_size=30)
    assert evicted == []


def test_age_and_size_together():
    groups = [group("old-small", 1, NOW - 40 * DAY), group("new-big", 100, NOW), group("mid", 50, NOW - 5 * DAY)]
    evicted, _, _ = plan(groups, NOW, max_size=120, older_than=30)
    assert [g.unihash for g in evicted] == ["old-small", "mid"]


def test_protection_of_the_last_publishes():
    groups = [group("published", 10, NOW - 9 * DAY, published=NOW - 9 * DAY), group("used", 10, NOW - DAY,
                                                                                   published=NOW - 50 * DAY)]
    evicted, kept, protected = plan(groups, NOW, max_size=0, protect_since=NOW - 10 * DAY)
    assert protected == 1 and [g.unihash for g in evicted] == ["used"] and [g.unihash for g in kept] == ["published"]


def test_group_times_and_size(tmp_path):
    """A directory's storage lists a file's atime as used and its mtime as written, and a group adds them up."""
    (tmp_path / "area").mkdir()
    path = tmp_path / "area" / "f"
    path.write_bytes(b"12345")
    os.utime(path, (NOW, NOW - DAY))
    (stored,) = LocalStorage(str(tmp_path)).files("area")
    g = Group("u")
    g.add("area/f", stored)
    assert (stored.rel, g.size, g.used, g.published) == ("f", 5, NOW, NOW - DAY)
