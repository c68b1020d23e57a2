"""UDP chat room server (seed 003): keeps ``{name: address}`` and forwards every message.

Run it, then start clients (``examples/chat/client.py NAME --port PORT``)::

    python examples/chat/server.py --port 8888

Protocol (one UTF-8 datagram per request, fields separated by one space):

=====================  ==========================================================
client -> server       meaning
=====================  ==========================================================
``L name``             join; the server answers ``OK`` or ``ERR <reason>``
``C name text...``     say ``text``; forwarded to every *other* member as ``name: text``
``Q name``             leave; the server answers ``EXIT`` (so the client's receiving
                       process stops) and tells the others ``*** name left``
=====================  ==========================================================

Why UDP (the notes' choice): one socket serves every client, there is no connection to set up or
tear down, and the server needs nothing but the address table to forward.  Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Any

HOST = "127.0.0.1"
MAX_DATAGRAM = 4096


class ChatServer:
    """The forwarding server; :meth:`serve_forever` blocks until SIGINT/SIGTERM."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.members: dict[str, tuple[str, int]] = {}  # name -> address, as in the notes

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, text: str, addr: tuple[str, int]) -> None:
        self.sock.sendto(text.encode(), addr)

    def broadcast(self, text: str, *, exclude: str | None = None) -> None:
        """Send ``text`` to every member except ``exclude``."""
        for name, addr in list(self.members.items()):
            if name != exclude:
                self.send(text, addr)

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        """Apply one request (join / message / leave); malformed requests are answered ERR."""
        kind, _, rest = data.decode(errors="replace").partition(" ")
        if kind == "L":
            name = rest.strip()
            if not name or " " in name or ":" in name:
                self.send("ERR a name is one word without ':'", addr)
            elif name in self.members:
                self.send(f"ERR the name {name!r} is taken", addr)
            else:
                self.send("OK", addr)
                self.broadcast(f"*** {name} joined", exclude=None)
                self.members[name] = addr
        elif kind == "C":
            name, _, text = rest.partition(" ")
            if self.members.get(name) == addr:  # only members speak, under their own name
                self.broadcast(f"{name}: {text}", exclude=name)
        elif kind == "Q":
            name = rest.strip()
            if self.members.get(name) == addr:
                del self.members[name]
                self.send("EXIT", addr)
                self.broadcast(f"*** {name} left")
        else:
            self.send("ERR unknown request", addr)

    def serve_forever(self) -> None:
        try:
            while True:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
                self.handle(data, addr)
        finally:
            self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UDP chat room server (127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=8888, help="UDP port (0: pick a free one)")
    args = parser.parse_args(argv)
    server = ChatServer(args.port)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"chat server listening on {HOST}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("chat server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
