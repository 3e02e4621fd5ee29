# SPDX-License-Identifier: MIT
#
# The documentation (docs/, Sphinx) builds with warnings as errors, and its
# generated reference says what the code has: every subcommand and option of
# the three scripts, every rule of the registry with its example message,
# every variable the class documents. Run once per test run (tests/run's
# docs part), not once per release: nothing here depends on one.

import argparse
import html
import os
import re
import subprocess
import sys

import pytest

LAYER = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(LAYER, "docs")
sys.path.insert(0, os.path.join(DOCS, "_ext"))

from equivcache.client import command as client  # noqa: E402
from equivcache.doctor import command as doctor  # noqa: E402
from equivcache.rules import RULE_NAMES  # noqa: E402
from equivcache.server import command as server  # noqa: E402

SCRIPTS = {"equivcache-server": server, "equivcache-client": client, "equivcache-doctor": doctor}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The HTML documentation, built from scratch with warnings as errors."""
    out = str(tmp_path_factory.mktemp("docs"))
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
                             "-d", os.path.join(out, ".doctrees"), DOCS, out],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    return out


def page(built, name):
    with open(os.path.join(built, name)) as f:
        return f.read()


def text_of(markup):
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def page_text(built, name):
    return text_of(page(built, name))


def subcommands(parser, path=()):
    """(path of subcommand names, parser) of parser and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, path + (name,))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_cli_reference_has_every_subcommand_and_option(built, script):
    markup = page(built, os.path.join("reference", script + ".html"))
    missing = []
    for path, parser in subcommands(SCRIPTS[script].make_parser()):
        section = markup
        for name in path:   # each subcommand's own section, below its parent's
            found = re.search(r"<h\d>%s<a class=\"headerlink\"" % re.escape(name), section)
            if not found:
                missing.append(" ".join(path))
                break
            section = section[found.end():]
        section = text_of(section)
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help") and not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(option),
                                                                    section):
                    missing.append("%s %s" % (" ".join(path), option))
    assert not missing, "not in the reference of %s: %s" % (script, missing)


def test_rules_reference_is_the_registry(built):
    from equivcache_docs import rule_examples
    text = page_text(built, os.path.join("reference", "rules.html"))
    positions = [text.find("WARNING: equivcache: " + rule_examples()[name][0]) for name in RULE_NAMES]
    assert -1 not in positions, [n for n, p in zip(RULE_NAMES, positions) if p == -1]
    assert positions == sorted(positions)


def test_variables_reference_is_the_class(built):
    from equivcache_docs import class_variables
    text = page_text(built, os.path.join("reference", "variables.html"))
    documented = class_variables()
    with open(os.path.join(LAYER, "classes", "equivcache.bbclass")) as f:
        used = set(re.findall(r"EQUIVCACHE_[A-Z_]+", f.read()))
    # All the class names but its own plumbing (the stock hash check it wraps) is documented.
    assert {name for name, _, _ in documented} == used - {"EQUIVCACHE_HASHCHECK_PREVIOUS"}
    assert [name for name, _, doc in documented if name not in text or " ".join(doc.split()[:6]) not in text] == []
