"""The program side every fake server shares (standard library only): the common
command line (`--host`, `--port`, `--port-file`), writing the bound port atomically,
serving until SIGTERM/SIGINT, and a clean exit. `process.py` is the test side that
starts these programs and waits for the port file.

    def main(argv=None):
        parser = arg_parser("what this fake is")
        parser.add_argument("--api-key")          # the fake's own options
        args = parser.parse_args(argv)
        run_program(serve(args))                 # serve() starts a server, then
                                                 # awaits serve_until_signalled(...)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    return parser


def write_port_file(path: str, port: int) -> None:
    """Write then rename, so a reader never sees a half-written port."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(str(port))
    os.replace(tmp, path)


async def serve_until_signalled(
    server: asyncio.Server, name: str, args: argparse.Namespace
) -> None:
    """Announce the port (port file and stdout), serve until SIGTERM/SIGINT, then close."""
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"{name} listening on http://{args.host}:{port}", flush=True)
    async with server:
        await stop.wait()
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def run_program(main: Coroutine[Any, Any, None]) -> NoReturn:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main)
    sys.exit(0)
