"""A TCP proxy on loopback that can throttle what the server sends and cut every connection at once."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType


class CuttableProxy:
    """
    Forwards ``127.0.0.1:<port>`` to ``upstream``. What the server sends is paced at ``bytes_per_second``, so a
    result set takes a while to arrive; :meth:`cut` then resets every connection and refuses new ones, as a
    warehouse that drops mid-read would.

    :param upstream: the real server's ``(host, port)``.
    :param bytes_per_second: the pace of server-to-client bytes, per connection.
    """

    def __init__(self, upstream: tuple[str, int], bytes_per_second: int = 200_000) -> None:
        self.upstream = upstream
        self.bytes_per_second = bytes_per_second
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_event = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.cut()

    def cut(self) -> None:
        """Drop every open connection and stop accepting new ones."""
        self.cut_event.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    # Linger 0: closing sends a reset. Shutting down first wakes the pumps blocked on it.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _accept(self) -> None:
        while not self.cut_event.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.bytes_per_second), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, pace: int | None) -> None:
        started, sent = time.monotonic(), 0
        try:
            while not self.cut_event.is_set() and (data := source.recv(16_384)):
                target.sendall(data)
                sent += len(data)
                if pace:
                    ahead = sent / pace - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
