# SPDX-License-Identifier: MIT
#
# lib/equivcache/client/conf.py: equivcache-client's marked block.

import pytest

from equivcache.client import conf as clientconf
from equivcache.client.conf import BEGIN, END, ConfError

URL = "http://cache.example.com:8080"
FULL = '%s\nINHERIT += "equivcache"\nEQUIVCACHE_SERVER = "%s"\n%s\n' % (BEGIN, URL, END)


@pytest.mark.parametrize("url", [URL, URL + "/", "https://cache.example.com", "file:///srv/yocto-cache"])
def test_check_url_accepts(url):
    assert clientconf.check_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["cache.example.com:8080", "ftp://x/", "http://", "http://h:99999",
                                 "http://h/?q=1", 'http://h/"x', "http://h/a b"])
def test_check_url_rejects(url):
    with pytest.raises(ConfError):
        clientconf.check_url(url)


def test_update_is_idempotent_and_keeps_user_text():
    user = 'MACHINE = "qemux86-64"\n# mine\n'
    once = clientconf.update(user, clientconf.plan(URL, user, []))
    assert once == user + "\n" + FULL
    assert clientconf.update(once, clientconf.plan(URL, once, [])) == once
    assert clientconf.remove(once) == user


def test_update_replaces_the_block_in_place():
    text = "A = \"1\"\n" + FULL + "B = \"2\"\n"
    other = "http://other:8080"
    new = clientconf.update(text, clientconf.plan(other, text, []))
    assert new == "A = \"1\"\n" + FULL.replace(URL, other) + "B = \"2\"\n"


def test_never_repeats_a_user_line():
    local = 'INHERIT += "rm_work equivcache"\nEQUIVCACHE_SERVER = "%s/"\n' % URL
    assert clientconf.plan(URL, "", [("conf/local.conf", local)]) == ""
    local = 'INHERIT:append = " equivcache"\n'
    assert clientconf.plan(URL, "", [("conf/local.conf", local)]) == \
        '%s\nEQUIVCACHE_SERVER = "%s"\n%s\n' % (BEGIN, URL, END)
    # The block's own lines are not the user's.
    assert clientconf.plan(URL, FULL, []) == FULL


def test_conflicting_server_is_an_error():
    local = 'MACHINE = "x"\nEQUIVCACHE_SERVER = "http://old:8080"\n'
    with pytest.raises(ConfError, match=r'conf/local.conf already sets EQUIVCACHE_SERVER = "http://old:8080" \(line 2\)'):
        clientconf.plan(URL, "", [("conf/local.conf", local)])


def test_broken_block_is_an_error():
    with pytest.raises(ConfError, match="without its"):
        clientconf.update(BEGIN + "\nX = \"1\"\n", FULL)
