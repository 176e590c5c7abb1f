"""The production server of `vaelab serve`: waitress, with bounded threads, connections and
time-outs, its own refusals answered in JSON, and a graceful stop.

waitress (a maintained, pure-Python WSGI server) reads each request whole in one asyncore loop,
then runs the app on a fixed pool of threads; ServerLimits bounds every resource a client can
hold: app threads, open connections (past the limit new ones wait in the kernel's backlog),
header and body bytes (a body over the cap is refused before it is buffered), and the time a
connection may stay idle or stall mid-request (a slow client is cut off after
`channel_timeout`). What waitress refuses itself (a malformed request, headers or a body over
the limits) is answered like the app's errors: JSON {"error": ...} with the app's headers.

Stopping: `stop()` only sets a flag, so a signal handler may call it (stop_on_signals wires
SIGINT and SIGTERM); `shutdown()` stops from another thread and waits. The loop then closes the
listening socket, lets every request it has received finish and its answer go out, closes
idle connections and returns; past `drain_seconds` it closes whatever is left.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

POLL_SECONDS = 0.2  # how soon the loop notices stop(): a signal does not wake its poll


@dataclass(frozen=True)
class ServerLimits:
    # App threads. A request takes milliseconds, much of it in torch and zlib, which release
    # the GIL: on 2 cores under 64 clients, of 4, 8, 16 and 32 threads 16 answered the most.
    threads: int = 16
    connection_limit: int = 100  # open connections at once; more wait in the backlog
    backlog: int = 128  # connections the kernel queues before refusing
    channel_timeout: int = 30  # seconds a connection may idle or stall before it is closed
    cleanup_interval: int = 2  # seconds between checks for such connections (waitress: ints)
    header_bytes: int = 16 * 1024
    body_bytes: int = 1024 * 1024  # a hard cap above the app's own (64 KB, a JSON 413)
    drain_seconds: float = 10.0  # how long a stop waits for requests in flight

    def adjustments(self, host: str, port: int) -> Adjustments:
        return Adjustments(
            host=host,
            port=port,
            threads=self.threads,
            connection_limit=self.connection_limit + 2,  # its count has the socket and trigger
            backlog=self.backlog,
            channel_timeout=self.channel_timeout,
            cleanup_interval=self.cleanup_interval,
            max_request_header_size=self.header_bytes,
            max_request_body_size=self.body_bytes,
            expose_tracebacks=False,
            asyncore_use_poll=True,  # select() fails past 1024 file descriptors
            ident="vaelab",
        )


class JsonErrorTask(ErrorTask):
    """waitress's own refusal (400, 413, 431, ...) as JSON, with the app's headers."""

    def execute(self):
        error = self.request.error
        body = json.dumps({"error": f"{error.reason}: {error.body}"}).encode()
        self.status = f"{error.code} {error.reason}"
        headers = [("Content-Type", "application/json"), *self.channel.server.error_headers]
        self.response_headers.extend(headers)
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonChannel(HTTPChannel):
    error_task_class = JsonErrorTask


class Listener(TcpWSGIServer):
    channel_class = JsonChannel
    error_headers: list[tuple[str, str]] = []


class WaitressServer:
    """The app on one listening socket (a name with several addresses: its first IPv4 one)."""

    def __init__(self, app, host: str, port: int, limits: ServerLimits,
                 error_headers: Iterable[tuple[str, str]] = ()):  # fmt: skip
        adj = limits.adjustments(host, port)
        ipv4 = [info for info in adj.listen if info[0] == socket.AF_INET]
        self._map: dict = {}
        self.listener = Listener(app, map=self._map, adj=adj, sockinfo=(ipv4 or adj.listen)[0])
        self.listener.error_headers = list(error_headers)
        self.limits = limits
        self._stopping = False
        self._done = threading.Event()

    @property
    def host(self) -> str:
        return self.listener.effective_host

    @property
    def port(self) -> int:
        return int(self.listener.effective_port)

    def serve_forever(self) -> None:
        """Answer requests until stop(), then drain (see the module docstring)."""
        try:
            while not self._stopping:
                self._loop_once(POLL_SECONDS)
            self._drain()
        finally:
            self._done.set()

    def stop(self) -> None:
        self._stopping = True  # nothing more: safe in a signal handler

    def shutdown(self) -> None:
        """Stop from another thread and wait until the loop has drained and returned."""
        self.stop()
        self.listener.pull_trigger()  # wakes the loop's poll now
        self._done.wait()

    def server_close(self) -> None:
        """Close every socket and the app threads (a no-op after serve_forever's drain)."""
        self.listener.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        wasyncore.close_all(self._map)

    def _loop_once(self, timeout: float) -> None:
        wasyncore.loop(timeout=timeout, map=self._map, use_poll=True, count=1)

    def _drain(self) -> None:
        wasyncore.dispatcher.close(self.listener)  # no new connections; the trigger stays
        deadline = time.monotonic() + self.limits.drain_seconds
        while self._close_idle() and time.monotonic() < deadline:
            self._loop_once(0.05)
        self.server_close()

    def _close_idle(self) -> bool:
        """Mark each connection with no request in flight and nothing left to send to close
        (as waitress's own idle clean-up does); whether any connection is still open."""
        channels = list(self.listener.active_channels.values())
        for channel in channels:
            if not channel.requests and not channel.total_outbufs_len:
                channel.will_close = True
        return bool(channels)


@contextlib.contextmanager
def stop_on_signals(server: WaitressServer) -> Iterator[None]:
    """While the block runs, Ctrl-C (SIGINT) and SIGTERM stop `server` gracefully (in the main
    thread only, where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: server.stop()) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
