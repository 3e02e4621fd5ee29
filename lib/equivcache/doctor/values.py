# SPDX-License-Identifier: MIT
#
# How a variable's value in this build differs from the mirror's, in the
# user's words: the words added and removed, and the bb.utils.contains and
# filter tests bitbake recorded in the value ("DISTRO_FEATURES{pam} = Set")
# said as "DISTRO_FEATURES contains "pam" in yours, not in the mirror's".
# Pure Python: no bb import.

import re


# What bitbake appends to a variable's recorded value for each
# bb.utils.contains/filter it evaluated: "\nDISTRO_FEATURES{pam} = Set".
_CONTAINS = re.compile(r"^(\S+)\{(.+)\} = (Set|Unset)$", re.MULTILINE)


def contains_tests(value):
    """({(VARIABLE, items): whether it contains them}, the value without those lines)."""
    text = str(value)
    tests = {(m.group(1), m.group(2)): m.group(3) == "Set" for m in _CONTAINS.finditer(text)}
    return tests, _CONTAINS.sub("", text)


def describe_contains(mtests, ltests):
    """The contains/filter tests whose answer differs, in words: [phrase]."""
    phrases = []
    for var, items in sorted(set(mtests) | set(ltests)):
        mine, theirs = ltests.get((var, items)), mtests.get((var, items))
        if mine == theirs:
            continue
        if mine is None or theirs is None:
            side = "yours" if theirs is None else "the mirror's"
            phrases.append("only %s tests whether %s contains \"%s\"" % (side, var, items))
        else:
            phrases.append("%s contains \"%s\" in %s, not in %s" % (
                var, items, "yours" if mine else "the mirror's", "the mirror's" if mine else "yours"))
    return phrases


def describe_values(mirror, local):
    """How a variable's value here differs from the mirror's, in words."""
    if mirror is None:
        return "(yours sets it to %s, the mirror's does not depend on it)" % quote(local)
    if local is None:
        return "(the mirror's is %s, yours does not depend on it)" % quote(mirror)
    (mtests, mirror), (ltests, local) = contains_tests(mirror), contains_tests(local)
    phrases = describe_contains(mtests, ltests)
    mwords, lwords = mirror.split(), local.split()
    if mwords == lwords and phrases:
        return "(%s)" % "; ".join(phrases)
    if len(mwords) > 1 or len(lwords) > 1:
        added = [w for w in lwords if w not in mwords]
        removed = [w for w in mwords if w not in lwords]
        words = []
        if added:
            words.append("adds %s" % " ".join(added))
        if removed:
            words.append("removes %s" % " ".join(removed))
        if words:
            return "(%s)" % "; ".join(["yours " + " and ".join(words)] + phrases)
        return "(%s)" % "; ".join(["same words, another order"] + phrases)
    return "(%s)" % "; ".join(["yours %s, the mirror's %s" % (quote(local), quote(mirror))] + phrases)


def quote(value, limit=60):
    text = str(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return '"%s"' % text


def word_changes(mirror, local):
    mwords = str(mirror or "").split()
    lwords = str(local or "").split()
    return [w for w in lwords if w not in mwords], [w for w in mwords if w not in lwords]
