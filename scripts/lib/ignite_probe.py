#!/usr/bin/env python3
"""Thin-client handshake probe for Apache Ignite 2.x nodes.

Usage: ignite_probe.py HOST:PORT [HOST:PORT ...] [--timeout SECONDS]

Sends a binary-protocol 1.0.0 handshake (the oldest version every 2.x node accepts) to each
address and checks the success byte of the reply. Exits 0 only if every address answered with
success; prints one line per address. Used by scripts/ignite.sh to decide that a node's client
port is really serving, not merely listening.
"""
import socket
import struct
import sys


def probe(address: str, timeout: float) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            # length, op=1 (handshake), version 1.0.0, client code 2 (thin client)
            body = struct.pack("<bhhhb", 1, 1, 0, 0, 2)
            sock.sendall(struct.pack("<i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (length,) = struct.unpack("<i", header)
            if length <= 0 or length > 1 << 20:
                return False, f"bad handshake reply length {length}"
            payload = _recv_exact(sock, length)
            if payload[0] == 1:
                return True, "handshake ok"
            return False, "handshake rejected by server"
    except (OSError, ValueError) as error:
        return False, str(error)


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise OSError("connection closed during handshake")
        data += chunk
    return data


def main(argv: list[str]) -> int:
    timeout = 2.0
    addresses = []
    args = iter(argv)
    for arg in args:
        if arg == "--timeout":
            timeout = float(next(args))
        else:
            addresses.append(arg)
    if not addresses:
        print(__doc__, file=sys.stderr)
        return 2
    ok_all = True
    for address in addresses:
        ok, message = probe(address, timeout)
        ok_all &= ok
        print(f"{address}: {message}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
