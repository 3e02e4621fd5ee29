# SPDX-License-Identifier: MIT
#
# equivcache-doctor's analysis: which setscene tasks of a target the mirror
# does not cover, which tasks are the root divergences (their own inputs
# differ from the mirror's, as opposed to tasks that only inherit a changed
# dependency), and what differs, ranked by the number of tasks it costs.
#
# The signature data on both sides is bitbake's (dump_sigtask's JSON): the
# local side from `bitbake -S none`, the mirror's from the cache's siginfo/
# and sstate .siginfo files, found through its index.json. The differences
# are those bitbake's own bb.siggen.compare_sigfiles() reports; this module
# only names and counts them. It takes the loading and comparing functions
# as arguments, so that plain pytest can exercise it.

import re
from dataclasses import dataclass, field

from equivcache.doctor.values import describe_values, word_changes

FORMAT = "equivcache-doctor"
VERSION = 1

# OE-core's tasks with an sstate object (SSTATETASKS), for a target whose
# mirror has none of a kind yet; the mirror's index adds any other.
SETSCENE_TASKS = frozenset((
    "do_populate_sysroot", "do_populate_lic", "do_package", "do_packagedata", "do_package_qa",
    "do_package_write_ipk", "do_package_write_rpm", "do_package_write_deb", "do_package_write_tar",
    "do_deploy", "do_deploy_source_date_epoch", "do_create_spdx", "do_create_runtime_spdx", "do_recipe_qa",
    "do_populate_sdk", "do_populate_sdk_ext", "do_image_complete", "do_deploy_archives",
))


@dataclass
class Task:
    """One task of the local build: from its sigdata file (data: all of it,
    or None until the analysis needs it; runtaskdeps: the tasks it depends
    on, read alone, if data is not there yet)."""
    recipe: str
    task: str
    unihash: str
    path: str
    data: dict = field(default=None, repr=False)
    runtaskdeps: list = field(default=None, repr=False)

    @property
    def pnid(self):
        return "%s:%s" % (self.recipe, self.task)

    @property
    def deps(self):
        if self.runtaskdeps is not None:
            return self.runtaskdeps
        return (self.data or {}).get("runtaskdeps") or []


@dataclass
class Cause:
    kind: str              # variable, variable-dependencies, file, task-dependency, taint, ignore-list, unihash, absent
    name: str
    mirror: object = None  # the mirror's value, where there is one
    local: object = None   # this build's value
    roots: list = field(default_factory=list)
    tasks: set = field(default_factory=set)
    bitbake: list = field(default_factory=list)   # compare_sigfiles' lines for the first root

    def key(self):
        return (self.kind, self.name, repr(self.mirror), repr(self.local))

    def summary(self):
        if self.kind == "variable":
            return "%s differs %s" % (self.name, describe_values(self.mirror, self.local))
        if self.kind == "variable-dependencies":
            return "what %s depends on differs" % self.name
        if self.kind == "file":
            return "the checksum of file %s differs" % self.name
        if self.kind == "task-dependency":
            return "the dependency on task %s %s" % (self.name, "is yours only" if self.local else "is the mirror's only")
        if self.kind == "taint":
            return "a task was forced or invalidated (taint %s on the mirror, %s here)" % (self.mirror, self.local)
        if self.kind == "ignore-list":
            return "%s differs" % self.name
        if self.kind == "unihash":
            return ("same task hash, another unihash: the hash equivalence server this build asks does not "
                    "know the mirror's equivalences (is BB_HASHSERVE_UPSTREAM the cache's server?)")
        if self.kind == "absent":
            return "recipe %s is not on the mirror at all (no producer built it)" % self.name
        if self.kind == "unexplained":
            return "%s differs in a way bitbake's comparison does not name" % self.name
        return "%s %s" % (self.kind, self.name)


# compare_sigfiles(mirror, local) lines that name a cause; the others
# ("basehash changed", "Task dependencies changed", "Hash for task
# dependency ... changed", diff bodies) follow from these.
_LINE_CAUSES = (
    (re.compile(r"^Variable (\S+) value changed"), "variable"),
    (re.compile(r"^Dependency on [Vv]ariable (\S+) was (?:added|removed)"), "variable"),
    (re.compile(r"^List of dependencies for variable (\S+) changed"), "variable-dependencies"),
    (re.compile(r"^Checksum for file (\S+) changed"), "file"),
    (re.compile(r"^Dependency on checksum of file (\S+) was (?:added|removed)"), "file"),
    (re.compile(r"^Dependency on task (\S+) was (?:added|removed)"), "task-dependency"),
    (re.compile(r"^Taint \(by forced/invalidated task\) changed"), "taint"),
    (re.compile(r"^(basehash_ignore_vars|taskhash_ignore_tasks) changed"), "ignore-list"),
)

_IGNORE_LIST_VARS = {"basehash_ignore_vars": "BB_BASEHASH_IGNORE_VARS",
                     "taskhash_ignore_tasks": "BB_TASKHASH_IGNORE_TASKS"}


def causes_from_lines(lines, mirror_data, local_data):
    """The causes compare_sigfiles' lines name, with the values from the data."""
    found = []
    mvals = mirror_data.get("varvals") or {}
    lvals = local_data.get("varvals") or {}
    for line in lines:
        for regex, kind in _LINE_CAUSES:
            m = regex.match(line)
            if not m:
                continue
            name = m.group(1) if regex.groups else ""
            if kind == "variable":
                found.append(Cause(kind, name, mvals.get(name), lvals.get(name)))
            elif kind == "file":
                found.append(Cause(kind, name, file_checksum(mirror_data, name), file_checksum(local_data, name)))
            elif kind == "task-dependency":
                found.append(Cause(kind, name, name in (mirror_data.get("runtaskhashes") or {}),
                                   name in (local_data.get("runtaskhashes") or {})))
            elif kind == "taint":
                found.append(Cause(kind, "", mirror_data.get("taint"), local_data.get("taint")))
            elif kind == "ignore-list":
                found.append(Cause(kind, _IGNORE_LIST_VARS[name]))
            else:
                found.append(Cause(kind, name))
            break
    return found


def file_checksum(data, name):
    for f, cs in data.get("file_checksum_values") or []:
        if f == name:
            return cs
    return None


def own_inputs_differ(mirror, local):
    """True if the task's own inputs differ: its variables (basehash), its
    files, the set of tasks it depends on, or its taint."""
    if mirror.get("basehash") != local.get("basehash"):
        return True
    if sorted(map(tuple, mirror.get("file_checksum_values") or [])) != \
            sorted(map(tuple, local.get("file_checksum_values") or [])):
        return True
    if sorted(mirror.get("runtaskdeps") or []) != sorted(local.get("runtaskdeps") or []):
        return True
    return mirror.get("taint") != local.get("taint")


def distance(mirror, local):
    """How far a mirror signature is from the local one, to pick the closest."""
    mv, lv = mirror.get("varvals") or {}, local.get("varvals") or {}
    mr, lr = mirror.get("runtaskhashes") or {}, local.get("runtaskhashes") or {}
    return (
        mirror.get("basehash") != local.get("basehash"),
        sum(1 for k in set(mv) | set(lv) if mv.get(k) != lv.get(k)),
        len(set(map(tuple, mirror.get("file_checksum_values") or [])) ^
            set(map(tuple, local.get("file_checksum_values") or []))),
        sum(1 for k in set(mr) | set(lr) if mr.get(k) != lr.get(k)),
    )


class Mirror:
    """What the cache's index.json says: objects and signature data."""

    def __init__(self, index):
        self.objects = set()
        self.object_tasks = set()
        self.signatures = {}     # (recipe, task) -> [(unihash, path relative to the cache root)]
        for obj in index.get("objects", []):
            if obj.get("path"):
                self.objects.add((obj["recipe"], obj["task"], obj["unihash"]))
                self.object_tasks.add(obj["task"])
            if obj.get("siginfo"):
                self.signatures.setdefault((obj["recipe"], obj["task"]), []).append(
                    (obj["unihash"], "sstate-cache/" + obj["siginfo"]))
        for sig in index.get("signatures", []):
            self.signatures.setdefault((sig["recipe"], sig["task"]), []).append(
                (sig["unihash"], "siginfo/" + sig["path"]))
        self.recipes = {recipe for recipe, _ in self.signatures} | {recipe for recipe, _, _ in self.objects}

    def covers(self, task):
        return (task.recipe, task.task, task.unihash) in self.objects

    def has_signature(self, task):
        return any(u == task.unihash for u, _ in self.signatures.get((task.recipe, task.task), ()))

    def candidates(self, task):
        return [p for _, p in self.signatures.get((task.recipe, task.task), ())]


def reachable(starts, neighbours):
    """Every node reachable from starts (themselves included) through neighbours(node)."""
    seen, todo = set(), list(starts)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(neighbours(node))
    return seen


def analyse(tasks, mirror, fetch, load, compare, max_candidates=8, complete=None):
    """Diagnose the local tasks against the mirror.

    tasks: {pnid: Task} with data loaded, or with their runtaskdeps and
    complete(tasks) to load the data of those the analysis compares;
    mirror: Mirror; fetch(paths) -> {path: local file} (mirror signature
    data, downloaded); load(file) -> sigdata dict; compare(mirror file,
    local file) -> lines. Returns the result document (without the targets
    and server).
    """
    setscene_names = SETSCENE_TASKS | mirror.object_tasks
    setscene = [t for t in tasks.values() if t.task in setscene_names]
    uncovered = [t for t in setscene if not mirror.covers(t)]

    # Every task the uncovered ones depend on, themselves included.
    closure = reachable([t.pnid for t in uncovered], lambda p: tasks[p].deps if p in tasks else ()) & tasks.keys()

    # Which of them differ from every signature the mirror has. A task the
    # mirror has no signature data for (its producer got it from sstate, or
    # it is noexec) cannot be compared: unknown, unless the mirror has
    # nothing at all of its recipe.
    differing, unknown = [], []
    for p in sorted(closure):
        t = tasks[p]
        if mirror.has_signature(t):
            continue
        if mirror.candidates(t):
            differing.append(t)
        elif t.recipe in mirror.recipes:
            unknown.append(t)
        else:
            differing.append(t)
    candidates_of = {t.pnid: mirror.candidates(t)[-max_candidates:] for t in differing}
    files = fetch(sorted({p for paths in candidates_of.values() for p in paths}))
    if complete is not None:
        complete(differing)

    roots = {}       # pnid -> [Cause]
    for t in differing:
        if t.recipe not in mirror.recipes:
            roots[t.pnid] = [Cause("absent", t.recipe)]
            continue
        candidates = [(files[p], load(files[p])) for p in candidates_of[t.pnid] if p in files]
        candidates = [(f, d) for f, d in candidates if d]
        if not candidates:
            unknown.append(t)
            continue
        mfile, mdata = min(candidates, key=lambda c: distance(c[1], t.data))
        if own_inputs_differ(mdata, t.data):
            lines = compare(mfile, t.path)
            causes = causes_from_lines(lines, mdata, t.data)
            for c in causes:
                c.bitbake = lines
            roots[t.pnid] = causes or [Cause("unexplained", t.pnid, bitbake=lines)]
        elif mdata.get("taskhash") == t.data.get("taskhash"):
            roots[t.pnid] = [Cause("unihash", "")]

    ranked = rank(tasks, roots)
    uncovered_ids = {t.pnid for t in uncovered}
    return {
        "format": FORMAT,
        "version": VERSION,
        "tasks": len(tasks),
        "setscene": {"tasks": len(setscene), "covered": len(setscene) - len(uncovered),
                     "uncovered": len(uncovered)},
        "differing": len(differing),
        "unknown": sorted(t.pnid for t in unknown),
        "causes": [cause_doc(c, uncovered_ids) for c in ranked],
    }


def rank(tasks, roots):
    """The causes of roots ({pnid: [Cause]}) merged and ranked by their cost:
    a root and every task that depends on it, directly or not."""
    dependants = {}
    for t in tasks.values():
        for dep in t.deps:
            dependants.setdefault(dep, set()).add(t.pnid)
    merged = {}
    for pnid in sorted(roots):
        reach = reachable([pnid], lambda p: dependants.get(p, ()))
        for c in roots[pnid]:
            m = merged.setdefault(c.key(), c)
            m.roots.append(pnid)
            m.tasks |= reach
    return sorted(merged.values(), key=lambda c: (-len(c.tasks), c.kind, c.name))


def cause_doc(c, uncovered_ids):
    doc = {
        "kind": c.kind,
        "name": c.name,
        "summary": c.summary(),
        "tasks": len(c.tasks),
        "setscene_tasks": len(c.tasks & uncovered_ids),
        "roots": sorted(c.roots, key=lambda r: (r != c.roots[0], r)),
        "bitbake": c.bitbake,
    }
    if c.kind in ("variable", "file", "taint"):
        doc["mirror"], doc["local"] = c.mirror, c.local
    if c.kind == "variable":
        doc["added"], doc["removed"] = word_changes(c.mirror, c.local)
    return doc


def render(doc, color=False):
    """The human-readable report."""
    out = []
    s = doc["setscene"]
    targets = " ".join(doc.get("targets", []))
    if not s["uncovered"]:
        out.append("%s: the mirror covers all %d setscene tasks." % (targets, s["tasks"]))
        return "\n".join(out) + "\n"
    out.append("%s: the mirror does not cover %d of %d setscene tasks (%d of the %d tasks differ from every "
               "signature the mirror has)." % (targets, s["uncovered"], s["tasks"], doc["differing"], doc["tasks"]))
    if not doc["causes"]:
        out.append("No root divergence found: the mirror lacks these objects although it has their signatures.")
    else:
        out.append("Causes, costliest first:")
    for i, c in enumerate(doc["causes"], 1):
        roots = c["roots"]
        more = " and %d more" % (len(roots) - 1) if len(roots) > 1 else ""
        out.append("%3d. %s: %d tasks (%d setscene), root %s%s" % (i, c["summary"], c["tasks"], c["setscene_tasks"],
                                                                  roots[0], more))
        shown = [line for line in c["bitbake"] if any(r.match(line) for r, _ in _LINE_CAUSES)]
        for line in shown[:4]:
            for part in line.splitlines()[:4]:
                out.append("       | %s" % part)
    if doc.get("unknown"):
        out.append("%d tasks could not be compared: the mirror has no signature data for them (their producer "
                   "restored them from sstate, or they do not execute), e.g. %s."
                   % (len(doc["unknown"]), ", ".join(doc["unknown"][:3])))
    return "\n".join(out) + "\n"
