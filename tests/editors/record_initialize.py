"""A stand-in language server command for the VS Code token test: it runs the real server
command given after the record file, passes every byte both ways unchanged, and appends what
each `initialize` request carried in `initializationOptions.token` to the record file (one
JSON line per initialize: the test's own throwaway token, in the test's tmp directory).

Usage: python record_initialize.py RECORD_FILE SERVER_COMMAND...
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import IO


def _pump(src: IO[bytes], dst: IO[bytes]) -> None:
    while chunk := src.read1(65536):  # type: ignore[attr-defined]
        dst.write(chunk)
        dst.flush()


def main() -> int:
    record, command = sys.argv[1], sys.argv[2:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert server.stdin is not None and server.stdout is not None
    threading.Thread(target=_pump, args=(server.stdout, sys.stdout.buffer), daemon=True).start()
    src = sys.stdin.buffer
    try:
        while True:
            headers = b""
            while not headers.endswith(b"\r\n\r\n"):
                byte = src.read(1)
                if not byte:
                    raise EOFError
                headers += byte
            length = 0
            for line in headers.decode("ascii").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = src.read(length)
            msg = json.loads(body)
            if isinstance(msg, dict) and msg.get("method") == "initialize":
                options = (msg.get("params") or {}).get("initializationOptions") or {}
                with open(record, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"token": options.get("token")}) + "\n")
            server.stdin.write(headers + body)
            server.stdin.flush()
    except (EOFError, BrokenPipeError):
        pass
    finally:
        try:
            server.stdin.close()
        except BrokenPipeError:
            pass
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
