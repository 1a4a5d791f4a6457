"""`exec` and `shell` requests: decide, then relay to the target.

A command is parsed and classified (`classify/shell.py`) and decided once; denied, the
client reads `interlock: denied (<decision id>): <reason>` on stderr and exit status 126.
Allowed, stdin, stdout, stderr, terminal size changes, signals, the exit status and an
exit signal are relayed between the client's channel and the target's.

An interactive shell (no command) is an action of its own (flag `interactive_shell`, which
the bundled policy refuses); where a policy allows it, both directions of the session are
hashed and the SHA-256 is audited as an observation under the shell's decision when it
ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import asyncssh

from interlock.classify.content import MAX_SCAN, scan
from interlock.classify.shell import ShellParseError, analyse
from interlock.classify.shellpath import Where
from interlock.core.model import Action, Agent, Decision, Effect, Operation, freeze
from interlock.core.refusal import guard_action
from interlock.proxies.ssh.connection import Connection
from interlock.proxies.ssh.resolve import resolved

log = logging.getLogger(__name__)

DENIED_EXIT = 126
UPSTREAM_FAILED_EXIT = 255
CHUNK = 64 * 1024


CACHED_COMMAND_CHARS = 1024
"""Commands up to this long are classified once and the result reused (below)."""


def command_action(
    agent: Agent, target: str, command: str, max_bytes: int, where: Where | None = None
) -> tuple[Action, bool]:
    """The action for `command` run on the target in `where`, and whether it has paths
    that the target's home directory (not given) would resolve."""
    classify = _classified if len(command) <= CACHED_COMMAND_CHARS else _classify
    details, needs_home, labels = classify(command, max_bytes, where)
    action = Action(
        agent,
        "ssh",
        Operation.EXEC,
        target,
        details,
        labels=labels,
        payload=command[:MAX_SCAN],
    )
    return action, needs_home


def _classify(
    command: str, max_bytes: int, where: Where | None
) -> tuple[Mapping[str, Any], bool, frozenset[str]]:
    """Details (frozen), whether a path needs the home, and the content labels: a pure
    function of the text and where it runs."""
    needs_home = False
    details: dict[str, Any] = {"command": command, "interactive": False}
    if len(command.encode("utf-8", "replace")) > max_bytes:
        # Refused whatever the policy says about its text; the record keeps a marked head.
        details["command"] = command[:max_bytes]
        details["flags"] = ["truncated", "unparsable"]
        details["parse_error"] = f"command longer than {max_bytes} bytes"
    else:
        try:
            analysis = analyse(command, where)
            details.update(analysis.details())
            needs_home = analysis.paths.needs_home
        except ShellParseError as exc:
            details.update(flags=["unparsable"], parse_error=str(exc), effects=["write", "egress"])
    found = scan(command[:MAX_SCAN])
    if found.kinds:
        details["dlp"] = sorted(found.kinds)
    return freeze(details), needs_home, found.labels


_classified = functools.lru_cache(maxsize=512)(_classify)
"""Why cached: parsing (bashlex) was the largest part of the proxy's own CPU per command,
0.25 ms for `true` and 0.8 ms for a two-command pipeline, more than the decision; agents
repeat their commands, and the result is immutable, so sharing it is safe."""


def shell_action(agent: Agent, target: str, term: str | None) -> Action:
    details = {
        "interactive": True,
        "term": term or "",
        "flags": ["interactive_shell"],
        "effects": ["write", "egress"],
    }
    return Action(agent, "ssh", Operation.EXEC, target, details)


LOCALE = re.compile(r"(C|POSIX|[A-Za-z]{2,3}(_[A-Z]{2})?)(\.(UTF-8|utf8))?(@[A-Za-z]+)?")
"""Locale values passed on: C, POSIX and UTF-8 locales. Under a multibyte encoding
such as BIG5 or GB18030 a byte of a character can be a backslash to the shell, so the
command would split differently from how it was read (in UTF-8) and decided."""
LOCALE_VARIABLES = re.compile(r"LANG|LANGUAGE|LC_[A-Z_]+")


def allowed_env(env: Mapping[str, str], patterns: list[str]) -> dict[str, str]:
    """The client's environment variables the target gets: those `patterns` allow, a
    locale variable only with a value that keeps the command's bytes UTF-8 (a locale
    name without a codeset, `zh_TW`, may default to BIG5: only C and POSIX go bare)."""
    return {
        k: v
        for k, v in env.items()
        if any(fnmatch.fnmatchcase(k, p) for p in patterns)
        and (not LOCALE_VARIABLES.fullmatch(k) or _utf8_locale(v))
    }


def _utf8_locale(value: str) -> bool:
    m = LOCALE.fullmatch(value)
    if m is None:
        return False
    return m.group(1) in ("C", "POSIX") or m.group(3) is not None


def _denial_text(decision: Decision) -> bytes:
    reason = "; ".join(decision.reasons) or decision.effect.value
    return f"interlock: denied ({decision.decision_id}): {reason}\r\n".encode()


async def _pump(
    read: Callable[[int], Any],
    write: Callable[[bytes], None],
    on_data: Callable[[bytes], None] | None = None,
) -> None:
    while True:
        data = await read(CHUNK)
        if not data:
            return
        if on_data is not None:
            on_data(data)
        write(data)


async def _command(conn: Connection, command: str) -> Action:
    """Classified where the target will run it; the target's home is asked for (once
    per target) only when a path needs it, and unknown it leaves those paths
    unresolved."""
    limit = conn.proxy.config.max_command_bytes
    where = await conn.proxy.where(conn)
    action, needs_home = command_action(conn.agent, conn.target_name, command, limit, where)
    if needs_home:
        learned = await conn.proxy.where(conn, learn=True)
        if learned.home is not None:
            action, _ = command_action(conn.agent, conn.target_name, command, limit, learned)
    if not conn.proxy.config.targets[conn.target_name].resolve_links:
        return action  # the operator's choice for a target without SFTP (docs/ssh.md)
    return await resolved(action, conn.realpath)


async def handle(process: asyncssh.SSHServerProcess[bytes], conn: Connection) -> None:
    """The process_factory: one exec or shell request (SFTP and scp go to `ProxySFTP`)."""
    command = process.command
    if process.subsystem is not None:
        why = f"subsystem {process.subsystem[:64]!r} is not served"
        action = guard_action(
            conn.agent,
            "ssh",
            Operation.EXEC,
            conn.target_name,
            {"subsystem": process.subsystem[:64]},
        )
        process.stderr.write(_denial_text(await conn.proxy.pdp.refuse(action, why)))
        process.exit(DENIED_EXIT)
        return
    term = process.get_terminal_type()
    if command is None or not command.strip():
        # An empty exec request is a shell too (the target's sshd starts one).
        action = shell_action(conn.agent, conn.target_name, term)
        command = None
    else:
        action = await _command(conn, command)
        if term is not None:
            # A command on a terminal can take input no decision sees (a pager's !sh, a
            # REPL): it is interactive.
            flags = [*action.details.get("flags", ()), "interactive_shell"]
            action = replace(action, details={**action.details, "flags": flags, "term": term})
    decision = await conn.proxy.decide(action, command or "", conn.held)
    if decision.effect is not Effect.ALLOW:
        process.stderr.write(_denial_text(decision))
        process.exit(DENIED_EXIT)
        return
    try:
        upstream = await conn.upstream()
    except (OSError, asyncssh.Error) as exc:
        process.stderr.write(
            f"interlock: cannot reach target {conn.target_name}: {exc}\r\n".encode()
        )
        process.exit(UPSTREAM_FAILED_EXIT)
        return
    transcript = hashlib.sha256() if command is None else None
    size = process.get_terminal_size()
    env = allowed_env(process.env, conn.proxy.config.env_allow)
    try:
        up = await upstream.create_process(
            command,
            env=env,
            term_type=term,
            term_size=size if term else None,
            encoding=None,
        )
    except (OSError, asyncssh.Error) as exc:
        process.stderr.write(f"interlock: target refused the session: {exc}\r\n".encode())
        process.exit(UPSTREAM_FAILED_EXIT)
        return
    code = await _relay(process, up, transcript)
    if transcript is not None:
        await conn.proxy.pdp.observe(
            Action(
                conn.agent,
                "ssh",
                Operation.EXEC,
                conn.target_name,
                {"interactive": True, "transcript_sha256": transcript.hexdigest()},
                parents=(decision.decision_id,),
            ),
            "interactive session transcript",
            decision,
        )
    if isinstance(code, tuple):
        process.exit_with_signal(*code)
    else:
        process.exit(code)


async def _relay(
    process: asyncssh.SSHServerProcess[bytes],
    up: asyncssh.SSHClientProcess[bytes],
    transcript: Any,
) -> int | tuple[str, bool, str, str]:
    hash_data = transcript.update if transcript is not None else None

    async def client_to_target() -> None:
        while True:
            try:
                data = await process.stdin.read(CHUNK)
            except asyncssh.TerminalSizeChanged as exc:
                with contextlib.suppress(OSError, asyncssh.Error):
                    up.change_terminal_size(exc.width, exc.height, exc.pixwidth, exc.pixheight)
                continue
            except asyncssh.SignalReceived as exc:
                with contextlib.suppress(OSError, asyncssh.Error):
                    up.send_signal(exc.signal)
                continue
            except asyncssh.BreakReceived as exc:
                with contextlib.suppress(OSError, asyncssh.Error):
                    up.send_break(exc.msec)
                continue
            if not data:
                with contextlib.suppress(OSError, asyncssh.Error):
                    up.stdin.write_eof()
                return
            if hash_data is not None:
                hash_data(data)
            up.stdin.write(data)

    feed = asyncio.create_task(client_to_target())
    try:
        await asyncio.gather(
            _pump(up.stdout.read, process.stdout.write, hash_data),
            _pump(up.stderr.read, process.stderr.write, hash_data),
        )
        await up.wait_closed()
    except (OSError, asyncssh.Error) as exc:
        with contextlib.suppress(Exception):
            process.stderr.write(f"\r\ninterlock: target connection lost: {exc}\r\n".encode())
        return UPSTREAM_FAILED_EXIT
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feed
    if up.exit_signal is not None:
        signal, core, msg, lang = up.exit_signal
        return (signal, core, msg, lang)
    if up.exit_status is None:
        process.stderr.write(b"\r\ninterlock: target connection lost\r\n")
        return UPSTREAM_FAILED_EXIT
    return up.exit_status
