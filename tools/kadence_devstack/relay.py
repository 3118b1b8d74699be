"""A TCP relay from 127.0.0.1 on the host into the local node's network namespace.

The local node (:mod:`kadence_devstack.node`) lives in a network namespace with no link out; the
test runner and the user's kubectl stay on the host. This process binds its listening sockets on
the host's loopback first, then enters the node's namespace (``setns``), so every connection it
accepts on the host is carried to an address inside the node — the API server, or a Service's
cluster IP through kube-proxy. Nothing it opens reaches past the node.

Run as ``python -m kadence_devstack.relay --netns /run/netns/NAME 127.0.0.1:LPORT=IP:PORT ...``;
it prints ``ready`` once it listens and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

CLONE_NEWNET = 0x40000000


def enter_netns(path: str) -> None:
    """Move this (single-threaded) process into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def parse_forward(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """``127.0.0.1:8443=10.213.0.2:6443`` -> ((listen host, port), (target host, port)). Pure."""
    listen, _, target = text.partition("=")
    lhost, _, lport = listen.rpartition(":")
    thost, _, tport = target.rpartition(":")
    if not (lhost and lport.isdigit() and thost and tport.isdigit()):
        raise ValueError(f"not LISTEN_HOST:PORT=TARGET_HOST:PORT: {text!r}")
    return (lhost, int(lport)), (thost, int(tport))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listeners: list[tuple[socket.socket, tuple[str, int]]]) -> None:
    def handler(target: tuple[str, int]):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*target), timeout=10
                )
            except (OSError, TimeoutError):
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        return handle

    servers = [await asyncio.start_server(handler(target), sock=sock) for sock, target in listeners]
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True, help="the namespace file, /run/netns/NAME")
    parser.add_argument("forwards", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    args = parser.parse_args(argv)
    listeners = []
    for text in args.forwards:
        (lhost, lport), target = parse_forward(text)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((lhost, lport))
        sock.listen(128)
        listeners.append((sock, target))
    enter_netns(args.netns)  # the listeners stay on the host; new sockets open in the node
    try:
        asyncio.run(_serve(listeners))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
