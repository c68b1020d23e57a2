"""UDP chat room client (seed 003): one process sends, another receives.

::

    python examples/chat/client.py NAME --port 8888

Type a line and press Enter to say it; ``quit`` (or end of input, Ctrl-D) leaves the room.
The notes' design: sending and receiving must not wait for each other, so after joining, the
client starts a receiving process (``multitask.Process``) that prints every line the server
forwards, while the main process reads your lines and sends them.  Because it only reads
stdin and writes stdout, a script can drive it through pipes (the tests do).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

import multitask as mp

HOST = "127.0.0.1"
MAX_DATAGRAM = 4096


def receive(sock: socket.socket) -> None:
    """Receiving process: print each forwarded line until the server says ``EXIT``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sending process handles Ctrl-C
    while True:
        data, _ = sock.recvfrom(MAX_DATAGRAM)
        text = data.decode(errors="replace")
        if text == "EXIT":
            return
        print(text, flush=True)


def join(sock: socket.socket, name: str, server: tuple[str, int], timeout: float = 5.0) -> str:
    """Ask to join as ``name``; return the server's answer (``OK`` or ``ERR ...``)."""
    sock.settimeout(timeout)
    try:
        sock.sendto(f"L {name}".encode(), server)
        data, _ = sock.recvfrom(MAX_DATAGRAM)
    except TimeoutError:
        return f"ERR no answer from {server[0]}:{server[1]}"
    finally:
        sock.settimeout(None)
    return data.decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="UDP chat room client (127.0.0.1 only)")
    parser.add_argument("name", help="your name in the room (one word)")
    parser.add_argument("--port", type=int, default=8888, help="the server's UDP port")
    args = parser.parse_args(argv)
    server = (HOST, args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    answer = join(sock, args.name, server)
    if answer != "OK":
        print(f"cannot join: {answer}", file=sys.stderr)
        sock.close()
        return 1
    print(f"*** you joined the room as {args.name}", flush=True)
    receiver = mp.Process(target=receive, args=(sock,), name="receiver", daemon=True)
    receiver.start()
    try:
        for line in sys.stdin:
            text = line.rstrip("\n")
            if text == "quit":
                break
            if text:
                sock.sendto(f"C {args.name} {text}".encode(), server)
    except KeyboardInterrupt:
        pass
    finally:
        sock.sendto(f"Q {args.name}".encode(), server)
        receiver.join(3.0)  # it stops when the server answers EXIT
        if receiver.is_alive():  # no server any more: do not leave it behind
            receiver.terminate()
            receiver.join()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
