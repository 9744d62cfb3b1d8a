#!/usr/bin/env python3
"""Thin-client handshake probe for Apache Ignite 2.x nodes.

Usage: ignite_probe.py HOST:PORT [HOST:PORT ...] [--timeout SECONDS] [--ca PEM]
                       [--user NAME --password SECRET]

Sends a binary-protocol 1.0.0 handshake (the oldest version every 2.x node accepts; 1.1.0 with
credentials, the first carrying them) to each address, over TLS verified with the CA file when
--ca is given, and checks the success byte of the reply. Exits 0 only if every address answered with
success; prints one line per address. Used by scripts/ignite.sh to decide that a node's client
port is really serving, not merely listening.
"""
import socket
import ssl
import struct
import sys


def _string(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack("<bi", 9, len(data)) + data


def probe(address: str, timeout: float, ca: str | None = None,
          credentials: tuple[str, str] | None = None) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            sock = raw
            if ca:
                context = ssl.create_default_context(cafile=ca)
                sock = context.wrap_socket(raw, server_hostname=host)
            sock.settimeout(timeout)
            # op=1 (handshake), version, client code 2 (thin client)
            if credentials:
                body = struct.pack("<bhhhb", 1, 1, 1, 0, 2)
                body += _string(credentials[0]) + _string(credentials[1])
            else:
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
    except (OSError, ValueError, ssl.SSLError) as error:
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
    ca = user = password = None
    addresses = []
    args = iter(argv)
    for arg in args:
        if arg == "--timeout":
            timeout = float(next(args))
        elif arg == "--ca":
            ca = next(args)
        elif arg == "--user":
            user = next(args)
        elif arg == "--password":
            password = next(args)
        else:
            addresses.append(arg)
    credentials = (user, password) if user is not None and password is not None else None
    if not addresses:
        print(__doc__, file=sys.stderr)
        return 2
    ok_all = True
    for address in addresses:
        ok, message = probe(address, timeout, ca, credentials)
        ok_all &= ok
        print(f"{address}: {message}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
