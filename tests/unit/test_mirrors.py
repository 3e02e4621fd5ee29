# SPDX-License-Identifier: MIT

import pytest

from equivcache.mirrors import Mirror, parse_mirrors, split_words

SEED = "file://.* http://10.0.0.1:8888/sstate-cache/PATH;downloadfilename=PATH"


def test_seed_mirror():
    parsed = parse_mirrors(SEED)
    assert parsed.problems == []
    (m,) = parsed.mirrors
    assert m.pattern == "file://.*"
    assert m.scheme == "http" and m.is_network
    assert m.location == "http://10.0.0.1:8888/sstate-cache/PATH"
    assert m.root == "http://10.0.0.1:8888/sstate-cache"
    assert m.parameters == {"downloadfilename": "PATH"}
    assert m.directory is None


def test_file_mirror_directory():
    m = Mirror("file://.*", "file:///srv/sstate%20cache/PATH")
    assert m.directory == "/srv/sstate cache"
    assert not m.is_network


def test_split_words_handles_escaped_newlines():
    assert split_words("a b \\n c d") == ["a", "b", "c", "d"]
    assert split_words(None) == []


@pytest.mark.parametrize("value, kinds", [
    ("", []),
    (SEED + " " + SEED, []),
    ("file://.* file:///srv/sstate/PATH", []),
    ("file://.* https://h/PATH;downloadfilename=PATH", []),
    ("file://.* s3://bucket/sstate/PATH", []),
    ("file://.*", ["odd-words"]),
    (SEED + " file://.*", ["odd-words"]),
    ("file://.* http://h/sstate-cache;downloadfilename=PATH", ["no-path"]),
    ("file://.* http://h/sstate-cache/PATH", []),
    ("file://.* htpp://h/sstate-cache/PATH", ["unsupported-scheme"]),
    ("file://.* /srv/sstate/PATH", ["unsupported-scheme"]),
    ("file://(.* file:///srv/PATH", ["bad-regex"]),
    ("file://.* file:///srv/sstate", ["no-path"]),
])
def test_problems(value, kinds):
    assert [k for k, _, _ in parse_mirrors(value).problems] == kinds
