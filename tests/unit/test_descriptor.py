# SPDX-License-Identifier: MIT

import copy
import json

import pytest

from equivcache import descriptor
from equivcache.descriptor import DescriptorError

GOOD = {
    "format": "equivcache-descriptor",
    "version": 1,
    "generated": "2026-11-21T05:00:00Z",
    "hashserv": ["127.0.0.1:8686", "ws://cache.example.com:8687"],
    "sstate": "sstate-cache",
    "downloads": "downloads",
    "nativelsbstrings": ["debian-12", "universal"],
    "producer": {"DISTRO": "nodistro", "MACHINE": "qemux86-64", "TUNE_FEATURES": "m64 core2",
                 "SDKMACHINE": "x86_64", "layers": [{"name": "meta", "revision": "abc"}]},
}


KEY = {"producer": "ci-1", "fingerprint": "2AB7AB83B9134775C2A81B22B7EA6B03A5CEBC3B",
       "keyids": ["B7EA6B03A5CEBC3B"], "url": "keys/ci-1.asc"}


def with_(**changes):
    doc = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return doc


def test_good_round_trip():
    assert descriptor.validate(GOOD) == []
    text = descriptor.dumps(GOOD)
    assert descriptor.loads(text) == GOOD
    assert text == descriptor.dumps(json.loads(text))


@pytest.mark.parametrize("doc, expected", [
    (with_(format="other"), "format: must be 'equivcache-descriptor'"),
    (with_(version=2), "version: 2 is not supported"),
    (with_(version="1"), "version: must be an integer"),
    (with_(version=True), "version: must be an integer"),
    (with_(generated="yesterday"), "generated: 'yesterday' is not an ISO 8601 time"),
    (with_(hashserv=[]), "hashserv: must be a non-empty list"),
    (with_(hashserv="h:1"), "hashserv: must be a non-empty list"),
    (with_(hashserv=["http://h:1"]), "hashserv: 'http://h:1' is not a hash equivalence server address"),
    (with_(hashserv=["h"]), "hashserv: 'h' is not a hash equivalence server address"),
    (with_(sstate=""), "sstate: must not be empty"),
    (with_(sstate=None), "sstate: must be a path or URL string"),
    (with_(nativelsbstrings="debian-12"), "nativelsbstrings: must be a list"),
    (with_(producer=[]), "producer: must be an object"),
    (with_(producer={"DISTRO": 1}), "producer.DISTRO: must be a string"),
    (with_(producer={"layers": [{"name": "meta"}]}), "producer.layers[0]: must be"),
    (with_(extra=1), "unknown keys: extra"),
    (with_(signatures=[]), "signatures: must be {"),
    (with_(signatures={"required": True, "keys": [dict(KEY, fingerprint="ab")]}), "signatures.keys[0]: must be"),
    (with_(signatures={"required": True, "keys": [dict(KEY, keyids=[])]}), "signatures.keys[0]: must be"),
    (with_(signatures={"required": True, "keys": [dict(KEY, keyids=["b7ea6b03a5cebc3b"])]}),
     "signatures.keys[0]: must be"),
])
def test_each_error(doc, expected):
    errors = descriptor.validate(doc)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_at_once():
    doc = with_(format="x", version=9, hashserv=[], sstate=None, producer=3)
    with pytest.raises(DescriptorError) as caught:
        descriptor.loads(json.dumps(doc), source="http://h/equivcache.json")
    assert len(caught.value.errors) == 5
    assert "in http://h/equivcache.json" in str(caught.value)


@pytest.mark.parametrize("text", ["", "{", "[1]", "null"])
def test_not_a_descriptor(text):
    with pytest.raises(DescriptorError):
        descriptor.loads(text)


def test_dumps_refuses_invalid():
    with pytest.raises(DescriptorError):
        descriptor.dumps(with_(version=0))


@pytest.mark.parametrize("path, expected", [
    ("sstate-cache", "http://h:8888/sstate-cache"),
    ("/sstate-cache/", "http://h:8888/sstate-cache"),
    ("http://other/sstate", "http://other/sstate"),
    ("", ""),
])
def test_resolve(path, expected):
    assert descriptor.resolve("http://h:8888/", path) == expected


def test_valid_sigs():
    """What SSTATE_VALID_SIGS lists for a signed cache: each producer's long key ids; nothing otherwise."""
    signed = with_(signatures={"required": True, "keys": [KEY, dict(KEY, producer="ci-2", keyids=["1" * 16, "2" * 16])]})
    assert descriptor.validate(signed) == []
    assert descriptor.valid_sigs(signed) == ["B7EA6B03A5CEBC3B", "1" * 16, "2" * 16]
    assert descriptor.valid_sigs(GOOD) == []
    assert descriptor.valid_sigs(with_(signatures={"required": False, "keys": [KEY]})) == []
