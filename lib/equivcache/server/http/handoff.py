# SPDX-License-Identifier: MIT
#
# Uploads off the readers' path: serve's http server hands each upload
# connection (the request it has read so far, and the socket) to a process
# of its own, forked from it before it serves, at nice 10. The upload's
# reading, hashing, writing and syncing then never hold the mirror's GIL,
# and its CPU yields to the readers'. A connection the worker cannot take
# (it died) is served where it is, as before. Linux: the socket goes over
# a unix SOCK_SEQPACKET pair with SCM_RIGHTS (socket.send_fds).

import io
import logging
import os
import signal
import socket
import threading

logger = logging.getLogger("equivcache.uploads")

NICE = 10
# The read buffer of an upload connection.
READ_BUFFER = 256 << 10
MESSAGE_LIMIT = 1 << 20


class _Prefixed(io.RawIOBase):
    """What the parent had read of the connection, then the socket."""

    def __init__(self, prefix, sock):
        self.prefix, self.sock = memoryview(prefix), sock

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n], self.prefix = self.prefix[:n], self.prefix[n:]
            return n
        return self.sock.recv_into(buffer)


class HandedSocket:
    """A connection taken over from the parent: reads start with what it had read."""

    def __init__(self, sock, prefix):
        self._sock, self._prefix = sock, prefix

    def makefile(self, mode="r", buffering=None, **kwargs):
        if "r" in mode:   # a batch of small files: many in one recv, not one or two each
            return io.BufferedReader(_Prefixed(self._prefix, self._sock), READ_BUFFER)
        return self._sock.makefile(mode, buffering, **kwargs)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def head_of(handler):
    """The request line and headers as the handler read them, as bytes."""
    lines = [handler.raw_requestline] + [("%s: %s\r\n" % (k, v)).encode("latin-1") for k, v in
                                         handler.headers.items()]
    return b"".join(lines) + b"\r\n"


class UploadWorker:
    """The upload process of an http server (its handler class and server
    object, copied by fork, serve each connection handed to it)."""

    def __init__(self, server):
        self.server = server
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:   # the worker: never returns
            parent.close()
            status = 0
            try:
                self._serve(child)
            except BaseException:   # noqa: BLE001 - whatever it was, the process ends here
                logger.exception("the upload worker failed")
                status = 1
            finally:
                os._exit(status)
        child.close()
        self.channel, self.lock = parent, threading.Lock()

    def _serve(self, channel):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.server.socket.close()   # the parent accepts; the worker only takes what it is given
        os.nice(NICE)
        while True:
            message, fds, _, _ = socket.recv_fds(channel, MESSAGE_LIMIT, 1)
            if not fds:
                return   # the parent is gone
            sock = socket.socket(fileno=fds[0])
            address = sock.getpeername()
            threading.Thread(target=self._handle, args=(HandedSocket(sock, message), address), daemon=True).start()

    def _handle(self, sock, address):
        try:
            self.server.RequestHandlerClass(sock, address, self.server)
        except Exception:   # noqa: BLE001 - one connection's failure, logged as the server would
            logger.exception("upload connection from %s failed", address[0])
        finally:
            try:
                sock._sock.close()
            except OSError:
                pass

    def take(self, handler):
        """Hand the handler's connection (its request read up to the body) to
        the worker; False if it cannot (then the handler serves it)."""
        sock = handler.connection
        try:
            sock.setblocking(False)
            try:
                buffered = handler.rfile.peek()   # what was read past the headers, without waiting
            finally:
                sock.setblocking(True)
            with self.lock:
                socket.send_fds(self.channel, [head_of(handler) + buffered], [sock.fileno()])
        except OSError as e:
            logger.warning("the upload worker took no connection (%s); serving it here", e)
            return False
        return True

    def alive(self):
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def stop(self):
        try:
            self.channel.close()
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (OSError, ChildProcessError):
            pass
