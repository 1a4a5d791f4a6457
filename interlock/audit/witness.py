"""A witness (c2sp.org/tlog-witness): cosigns a log's checkpoints, never two histories.

It keeps, per log origin, the size and root of the latest checkpoint it cosigned, and
cosigns a new one only if the log's signature verifies and a consistency proof shows the
new tree extends that one. A log that rewrote or forked its history cannot get a
cosignature for it: so a client that requires cosignatures cannot be shown a history
other clients did not also see. `WitnessState.add_checkpoint` is the whole protocol
(sans-IO: a request body in, a status and body out); `witness_app` serves it over HTTP
for `interlock witness serve`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from interlock.audit import merkle
from interlock.audit.checkpoint import CheckpointError, Verifier, open_checkpoint, signatures
from interlock.audit.cosignature import Cosigner

log = logging.getLogger(__name__)

MAX_PROOF_LINES = 63
"""tlog-witness: a client MUST NOT send more (a proof in a tree of 2^63 leaves)."""
MAX_BODY = 64 * 1024
SIZE_TYPE = "text/x.tlog.size"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain"


@dataclass(frozen=True, slots=True)
class Seen:
    size: int
    root: bytes


class WitnessState:
    """The witness's record of each log it follows, persisted to `path` (JSON, written
    atomically) before any cosignature is returned, under one lock, so two concurrent
    requests cannot roll the record back (the race tlog-witness describes)."""

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Mapping[str, Verifier],
        path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self.logs = dict(logs)
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, Seen] = {}
        if path.exists():
            for origin, entry in json.loads(path.read_text("utf-8")).items():
                self._seen[origin] = Seen(int(entry["size"]), base64.b64decode(entry["root"]))

    def seen(self, origin: str) -> Seen | None:
        return self._seen.get(origin)

    def add_checkpoint(self, body: bytes) -> Answer:
        """One `POST /add-checkpoint` (tlog-witness), start to end."""
        try:
            old, proof, note = _parse(body)
        except ValueError as exc:
            return Answer(400, f"{exc}\n")
        origin = note.split("\n", 1)[0]
        verifier = self.logs.get(origin)
        if verifier is None:
            return Answer(404, f"unknown log {origin[:100]!r}\n")
        try:
            cp = open_checkpoint(note, verifier)
        except CheckpointError as exc:
            return Answer(403, f"{exc}\n")
        if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
            # The empty tree has one root: else two "size 0" trees get cosigned.
            return Answer(400, "a checkpoint of size 0 must have the empty tree's root\n")
        if old > cp.size:
            return Answer(400, f"old size {old} is past the checkpoint's size {cp.size}\n")
        with self._lock:
            seen = self._seen.get(origin) or Seen(0, b"")
            if old != seen.size:
                return Answer(409, f"{seen.size}\n", SIZE_TYPE)
            if old == cp.size and seen.size and cp.root != seen.root:
                log.warning("witness: %s signs two roots for size %d", origin, cp.size)
                return Answer(409, f"{seen.size}\n", SIZE_TYPE)
            if old and old != cp.size:
                if not merkle.verify_consistency(old, cp.size, seen.root, cp.root, proof):
                    log.warning(
                        "witness: %s gives no valid consistency proof from %d to %d",
                        origin,
                        old,
                        cp.size,
                    )
                    return Answer(422, "consistency proof does not verify\n")
            elif proof:
                return Answer(422, "a consistency proof from this size must be empty\n")
            self._seen[origin] = Seen(cp.size, cp.root)
            self._save()
        text, _ = signatures(note)
        return Answer(200, self.cosigner.cosign(text, int(self.clock())))

    def _save(self) -> None:
        doc = {
            o: {"size": s.size, "root": base64.b64encode(s.root).decode()}
            for o, s in self._seen.items()
        }
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)


def _parse(body: bytes) -> tuple[int, list[bytes], str]:
    """`old N`, proof lines, a blank line, the checkpoint note."""
    if len(body) > MAX_BODY:
        raise ValueError("request too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no blank line before the checkpoint")
    first, *lines = head.split("\n")
    size = first.removeprefix("old ")
    if first == size or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise ValueError(f"bad old size line {first[:40]!r}")
    if len(lines) > MAX_PROOF_LINES:
        raise ValueError("too many consistency proof lines")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines]
    except binascii.Error:
        raise ValueError("a proof line is not base64") from None
    if any(len(p) != merkle.HASH_SIZE for p in proof):
        raise ValueError("a proof line is not a 32-byte hash")
    return int(size), proof, note


def witness_app(state: WitnessState) -> web.Application:
    """`POST /add-checkpoint`, as the submission prefix `/`."""

    async def add(request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        answer = state.add_checkpoint(body)
        return web.Response(
            status=answer.status, text=answer.body, content_type=answer.content_type
        )

    app = web.Application(client_max_size=MAX_BODY + 1)
    app.router.add_post("/add-checkpoint", add)
    return app
