"""A stand-in for a Postgres worker process (`python -m interlock.worker`), for the
supervisor's tests: it reads its order, takes a second to start (the real one's start is
too quick to place a SIGHUP inside it reliably), answers "ready" and writes down, one line
each in the file `$STANDIN_LOG`, the overrides its order carried and everything that
reaches it afterwards: SIGHUPs and the lines on its stdin."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TextIO


def main() -> None:
    with Path(os.environ["STANDIN_LOG"]).open("a", buffering=1) as log:
        serve(log)


def serve(log: TextIO) -> None:
    def hup(signum: int, frame: FrameType | None) -> None:
        log.write("sighup\n")

    signal.signal(signal.SIGHUP, hup)
    order = json.loads(sys.stdin.buffer.readline())
    log.write(f"order {json.dumps(order['overrides'], sort_keys=True)}\n")
    time.sleep(1.0)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.flush()
    while line := sys.stdin.buffer.readline():
        log.write(f"stdin {line.decode().strip()}\n")


if __name__ == "__main__":
    main()
