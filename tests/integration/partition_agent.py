"""A tiny region process for tests/integration/test_partition.py, run as a real subprocess.

It listens (TCP echo, and UDP that records what arrives) on ``argv[1]`` and takes one JSON
command per stdin line, answering one JSON line on stdout. Commands travel over pipes, not the
network, so a partition never cuts the test off from its agents. Every socket is opened after
start, i.e. inside the cgroup the process was started in.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

TIMEOUT = 0.7  # seconds for a connect or an echo: a dropped packet shows as a timeout


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def _serve_tcp(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _serve_udp(sock: socket.socket, received: list[str]) -> None:
    while True:
        data, _ = sock.recvfrom(4096)
        received.append(data.decode())


def _roundtrip(conn: socket.socket, payload: bytes) -> bool:
    conn.settimeout(TIMEOUT)
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = conn.recv(4096)
        if not chunk:
            return False
        got += chunk
    return got == payload


class Held:
    """A kept connection; bytes sent but not echoed yet (a stall) are owed by later echoes."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.owed = conn, b""

    def echo(self, payload: bytes) -> bool:
        self.conn.settimeout(TIMEOUT)
        self.conn.sendall(payload)
        self.owed += payload
        try:
            while self.owed:
                chunk = self.conn.recv(4096)
                if not chunk or not self.owed.startswith(chunk):
                    raise ConnectionError("closed or garbled")
                self.owed = self.owed[len(chunk):]
        except socket.timeout:
            return False
        return True


def main() -> None:
    host = sys.argv[1]
    server = socket.create_server((host, 0))
    port = server.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    received: list[str] = []
    threading.Thread(target=_serve_tcp, args=(server,), daemon=True).start()
    threading.Thread(target=_serve_udp, args=(udp, received), daemon=True).start()
    print(json.dumps({"port": port}), flush=True)
    held: dict[str, Held] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op, answer = cmd["op"], {}
        try:
            if op == "connect":  # a fresh connection, one echo, closed
                with socket.create_connection((cmd["host"], cmd["port"]), timeout=TIMEOUT) as conn:
                    answer["ok"] = _roundtrip(conn, b"ping")
            elif op == "open":  # a connection kept for later "echo" commands
                held[cmd["name"]] = Held(socket.create_connection((cmd["host"], cmd["port"]), timeout=TIMEOUT))
                answer["ok"] = True
            elif op == "echo":
                answer["ok"] = held[cmd["name"]].echo(cmd["payload"].encode())
            elif op == "udp":
                udp.sendto(cmd["payload"].encode(), (cmd["host"], cmd["port"]))
                answer["ok"] = True
            elif op == "received":
                answer["received"] = list(received)
        except OSError as exc:
            answer = {"ok": False, "error": type(exc).__name__}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
