# SPDX-License-Identifier: MIT
#
# Work started now and waited for later: a publish imports bitbake's
# hashserv, readies a write endpoint or reads a bucket's files while it does
# something else. Pure Python: no bb import.

import threading


class Background(threading.Thread):
    """function(*args) run in a thread of its own from now on: result()
    waits for it, and returns what it returned or raises what it raised."""

    def __init__(self, function, *args):
        super().__init__(daemon=True)
        self.function, self.args, self.value, self.error = function, args, None, None
        self.start()

    def run(self):
        try:
            self.value = self.function(*self.args)
        except BaseException as e:   # raised in the thread that asks for the result
            self.error = e

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.value
