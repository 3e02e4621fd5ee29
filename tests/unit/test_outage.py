# SPDX-License-Identifier: MIT

import multiprocessing

import pytest

from equivcache.outage import CONSEQUENCE, claim_once, describe_error, outage_message


@pytest.mark.parametrize("error, expected", [
    (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"),
     "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"),
    (FileNotFoundError(2, "No such file or directory"), "FileNotFoundError: [Errno 2] No such file or directory"),
    (EOFError(), "EOFError"),
    (ConnectionError("  "), "ConnectionError"),
])
def test_describe_error(error, expected):
    assert describe_error(error) == expected


def test_outage_message_names_address_cause_and_fix():
    text = outage_message("unix:///b/hashserve.sock", FileNotFoundError(2, "No such file"), "querying unihashes")
    assert text.startswith("EquivCacheHash: ")
    assert 'BB_HASHSERVE = "unix:///b/hashserve.sock"' in text
    assert "while querying unihashes (FileNotFoundError: [Errno 2] No such file)" in text
    assert CONSEQUENCE in text
    assert "unihash is its task hash" in text
    assert text.endswith("point BB_HASHSERVE at one that is running.")
    assert "\n" not in text


def test_claim_once_per_token(tmp_path):
    marker = tmp_path / "sub" / "dir" / "server-outage"
    assert claim_once(str(marker), "build-1") is True
    assert claim_once(str(marker), "build-1") is False
    assert claim_once(str(marker), "build-1") is False
    assert marker.read_text() == "build-1\n"
    assert claim_once(str(marker), "build-2") is True
    assert claim_once(str(marker), "build-2") is False
    assert marker.read_text() == "build-2\n"


def test_claim_once_unwritable_directory_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        claim_once(str(blocker / "marker"), "build-1")


def _claim(args):
    path, token, start = args
    start.wait()
    return claim_once(path, token)


def test_claim_once_across_processes(tmp_path):
    # Forked task workers race to report the same outage: exactly one wins.
    marker = str(tmp_path / "server-outage")
    with multiprocessing.Manager() as manager:
        start = manager.Event()
        with multiprocessing.Pool(8) as pool:
            pending = pool.map_async(_claim, [(marker, "build-1", start)] * 32)
            start.set()
            results = pending.get(timeout=60)
    assert results.count(True) == 1
    assert results.count(False) == 31
