# SPDX-License-Identifier: MIT
#
# What this bitbake and its python can do, asked of the code rather than of
# a version number (releases differ: scarthgap's bitbake 2.8, wrynose's 2.18).

import importlib.metadata
import importlib.util

import bb.cooker
import bb.siggen


def database_dir_variable():
    """Whether this bitbake reads BB_HASHSERVE_DB_DIR for its auto server (bitbake 2.18, wrynose): ask the
    code that starts that server."""
    return "BB_HASHSERVE_DB_DIR" in bb.cooker.BBCooker.handlePRServ.__code__.co_consts


def websockets_usable():
    """Whether this python has the websockets module that bitbake's ws:// and
    wss:// client needs: version 10 or newer."""
    try:
        version = importlib.metadata.version("websockets")
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec("websockets") is not None   # installed without metadata
    try:
        return int(version.split(".")[0]) >= 10
    except ValueError:
        return True


def stock_survives_outage():
    """Whether bitbake's own hash equivalence handlers carry on when the
    server is away. scarthgap's bitbake (2.8) aborts the build; bitbake 2.18
    (wrynose) catches the connection errors, warns and guesses, in the same
    rework that removed the handler's client pool: ask for that."""
    return not hasattr(bb.siggen.SignatureGeneratorUniHashMixIn, "client_pool")
