# SPDX-License-Identifier: MIT
#
# What the scripts share: one error convention, the argument parser that
# keeps to it, finding poky's bitbake, and a progress bar. A user's error is
# one line and exit status 2 (UsageError; nothing changed); a failure of
# something that should have worked is exit status 1 (Failure); Ctrl-C is
# 130. No traceback for anything a user can cause.

import argparse
import os
import shutil
import subprocess
import sys


class UsageError(Exception):
    """Bad input: one line, exit status 2, nothing changed."""


class Failure(Exception):
    """Something that should have worked did not: exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse with the scripts' one-line usage errors (exit status 2)."""

    def error(self, message):
        sys.stderr.write("%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))
        sys.exit(2)


def run(prog, command, *args):
    """command(*args)'s exit status, with UsageError, Failure and Ctrl-C
    turned into their one line on stderr and their exit status."""
    try:
        return command(*args)
    except UsageError as e:
        sys.stderr.write("%s: error: %s\n" % (prog, e))
        return 2
    except Failure as e:
        sys.stderr.write("%s: %s\n" % (prog, e))
        return 1
    except KeyboardInterrupt:
        return 130


def spawn_detached(command, log, header=None, cwd=None, env=None, fresh=False):
    """Start command in a session of its own, stdout and stderr appended to
    log (a new log if fresh; after header), without bitbake's BB* variables:
    a build that starts it neither waits for it nor fails with it."""
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("BB")}, **(env or {}))
    with open(log, "w" if fresh else "a") as out:
        if header:
            out.write(header)
            out.flush()
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                         start_new_session=True, close_fds=True)


def layer_dir():
    """This layer's directory (symbolic links resolved)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def find_bitbake(explicit=None):
    """The bitbake directory (with bin/bitbake-hashserv and lib/hashserv):
    --bitbake, $BITBAKEDIR, the bitbake on PATH (oe-init-build-env puts it
    there), $POKY_DIR/bitbake, or poky beside the layer."""
    candidates = []
    if explicit:
        candidates.append(explicit)
    if os.environ.get("BITBAKEDIR"):
        candidates.append(os.environ["BITBAKEDIR"])
    on_path = shutil.which("bitbake")
    if on_path:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(on_path))))
    if os.environ.get("POKY_DIR"):
        candidates.append(os.path.join(os.environ["POKY_DIR"], "bitbake"))
    parent = os.path.dirname(layer_dir())
    candidates += [os.path.join(parent, "poky", "bitbake"), os.path.join(parent, "bitbake")]
    for c in candidates:
        if os.path.isfile(os.path.join(c, "bin", "bitbake-hashserv")) and \
                os.path.isdir(os.path.join(c, "lib", "hashserv")):
            return os.path.abspath(c)
    if explicit:
        raise UsageError("--bitbake %s: no bin/bitbake-hashserv and lib/hashserv there" % explicit)
    raise UsageError("cannot find bitbake: source oe-init-build-env, or set BITBAKEDIR or POKY_DIR, "
                     "or pass --bitbake DIR")


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, what, total, stream=sys.stderr):
        self.what, self.total, self.stream = what, total, stream
        self.tty = stream.isatty() and total > 0
        self.done = 0
        self.shown = -1

    def step(self, n=1):
        self.done += n
        if not self.tty:
            return
        percent = self.done * 100 // self.total
        if percent != self.shown:
            self.shown = percent
            bar = "#" * (percent // 4)
            self.stream.write("\r%-22s [%-25s] %3d%% %d/%d" % (self.what, bar, percent, self.done, self.total))
            self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
