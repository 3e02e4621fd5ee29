# SPDX-License-Identifier: MIT
#
# Writing files so that a reader sees the old or the new one, never a part.

import json
import os
import tempfile


def write_atomic(path, text, mode=0o644):
    """Replace path with text (str or bytes) so that a reader sees the old or the new file, never a part."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_bytes(doc):
    """A document as write_json() writes it."""
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def write_json(path, doc, mode=0o644):
    write_atomic(path, json_bytes(doc), mode)
