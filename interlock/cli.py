"""The `interlock` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interlock.config import Config, load_config
from interlock.core.bundle import bundled_policy_dir, load_bundle
from interlock.core.policy import DECISION_ENTRYPOINT, PolicyManager
from interlock.core.regotest import run_tests
from interlock.core.serialization import ActionFormatError, action_from_json, decision_to_json
from interlock.errors import ConfigError, InterlockError, PolicyError, UsageError

if TYPE_CHECKING:
    from interlock.audit.checkpoint import Verifier
    from interlock.audit.cosignature import Quorum
    from interlock.audit.store import AuditStore

EXAMPLE_CONFIG = Path(__file__).resolve().parent / "config_example.toml"
DEFAULT_CONFIG = Path("interlock.toml")
"""Read when no `-c` is given and it exists (what `interlock init` writes)."""
CONFIG_HELP = "config file (default: ./interlock.toml if it exists, else the embedded defaults)"
TOKEN_PLACEHOLDER = "interlock-init-writes-a-fresh-token"  # noqa: S105 (replaced by init)


def _config_file(path: str | None) -> Path | None:
    """`-c` if given, else ./interlock.toml if present, else None (embedded defaults)."""
    if path:
        return Path(path)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _config(path: str | None) -> Config:
    source = _config_file(path)
    return load_config(source) if source else Config.embedded()


def _bundle_dir(args: argparse.Namespace) -> Path:
    if args.bundle:
        return Path(args.bundle)
    if args.config:
        return _config(args.config).policy.bundle or bundled_policy_dir()
    return bundled_policy_dir()


def _read_json(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{name}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


COMPONENTS = ("admin", "postgres", "http", "ssh", "extauthz")


def only(config: Config, names: str) -> Config:
    """The config with only the named components on (one per process, as sidecars)."""
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - set(COMPONENTS)
    if unknown or not wanted:
        raise UsageError(f"--only takes some of {', '.join(COMPONENTS)}; got {names!r}")
    missing = [n for n in wanted if getattr(config, n) is None]
    if missing:
        raise UsageError(f"--only {','.join(sorted(missing))}: not configured in this config")
    return config.model_copy(update={n: None for n in COMPONENTS if n not in wanted})


def cmd_up(args: argparse.Namespace) -> int:
    from interlock.eventloop import loop_factory
    from interlock.runtime import serve, with_demo_agent

    source = _config_file(args.config)

    def read() -> Config:
        config = load_config(source) if source else with_demo_agent(Config.embedded())
        return only(config, args.only) if args.only else config

    config = read()
    asyncio.run(
        serve(config, reread=read if source else None, source=source),
        loop_factory=loop_factory(config.event_loop),
    )
    return 0


def cmd_host(args: argparse.Namespace) -> int:
    from interlock.host.service import serve
    from interlock.runtime import build

    asyncio.run(serve(_config(args.config), build))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write the example config: the embedded defaults as a file, the demo agent's token
    taken from (or first written to) .interlock/demo.token, as `interlock up` would."""
    from interlock.config import DEFAULT_DATA_DIR
    from interlock.runtime import demo_token

    target = Path(args.path)
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; use --force to overwrite")
    token = demo_token(Path(DEFAULT_DATA_DIR))
    text = EXAMPLE_CONFIG.read_text("utf-8").replace(TOKEN_PLACEHOLDER, token)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    target.chmod(0o600)
    print(f"wrote {target} (agent demo's token is also in {DEFAULT_DATA_DIR}/demo.token)")
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    manager = PolicyManager(_bundle_dir(args))
    compiled = manager.load()
    print(f"ok: {manager.bundle_dir} compiles, version {compiled.version}")
    return 0


def cmd_policy_eval(args: argparse.Namespace) -> int:
    bundle = _bundle_dir(args)
    if args.action:
        from interlock.testing import make_pdp

        try:
            action = action_from_json(_read_json(args.action))
        except ActionFormatError as exc:
            raise UsageError(f"{args.action}: {exc}") from None
        decision = asyncio.run(make_pdp(bundle).decide(action))
        print(json.dumps(decision_to_json(decision), indent=2))
        return 0
    doc = _read_json(args.input)
    if not isinstance(doc, dict):
        raise UsageError(f"{args.input}: the input document must be a JSON object")
    manager = PolicyManager(bundle, entrypoints=(args.entrypoint,))
    compiled = manager.load()
    print(json.dumps(compiled.evaluate(args.entrypoint, doc), indent=2))
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    source = load_bundle(_bundle_dir(args))
    outcomes = run_tests(source)
    failed = [o for o in outcomes if o.status != "pass"]
    for o in outcomes:
        if args.verbose or o.status != "pass":
            extra = f": {o.detail}" if o.detail else ""
            print(f"{o.status.upper():5} {o.module}: {o.name}{extra}")
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    if not outcomes:
        print("no test_ rules found", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _audit_store(args: argparse.Namespace) -> tuple[Config, AuditStore]:
    from interlock.audit.factory import open_store, store_for

    config = _config(args.config)
    store = open_store(args.store, config.data_dir) if args.store else store_for(config)
    return config, store


def _verifier(args: argparse.Namespace, config: Config) -> Verifier:
    """The trusted key: --key (a verifier string or a file holding one), else the public
    half of this installation's signing key."""
    from interlock.audit.checkpoint import Verifier
    from interlock.audit.factory import signer_for

    if args.key:
        text = Path(args.key).read_text("utf-8") if Path(args.key).is_file() else args.key
        return Verifier.parse(text)
    local = config.audit.key or config.data_dir / "audit.key"
    if config.audit.transit is None and not local.exists():
        raise UsageError("no audit key here; pass --key NAME+ID+KEY")
    return signer_for(config).verifier


def _with_store(args: argparse.Namespace, work: Any) -> int:
    async def run() -> int:
        config, store = _audit_store(args)
        await store.open()
        try:
            code: int = await work(config, store)
            return code
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from interlock.audit import commands

    config = _config(args.config)
    since = Path(args.since).read_text("utf-8") if args.since else None
    max_age = (
        args.max_unsigned_age
        if args.max_unsigned_age is not None
        else 2 * config.audit.checkpoint_interval
    )
    quorum = _quorum(args)
    if args.bundle:
        report = commands.verify_bundle(
            Path(args.bundle),
            _verifier(args, config),
            None,
            since=since,
            max_age=max_age,
            quorum=quorum,
        )
        return _print_report(report)

    async def work(config: Config, store: AuditStore) -> int:
        verifier = _verifier(args, config)
        report = await commands.verify_store(
            store, verifier, config.audit.origin, since=since, max_age=max_age, quorum=quorum
        )
        return _print_report(report)

    return _with_store(args, work)


def _quorum(args: argparse.Namespace) -> Quorum | None:
    """--witness keys (each a vkey or a file holding one) and --quorum K (default: all)."""
    from interlock.audit.cosignature import Quorum, WitnessKey

    if not args.witness:
        if args.quorum:
            raise UsageError("--quorum needs --witness keys")
        return None
    keys = tuple(
        WitnessKey.parse(Path(w).read_text("utf-8") if Path(w).is_file() else w)
        for w in args.witness
    )
    return Quorum(keys, args.quorum or len(keys))


def _print_report(report: Any) -> int:
    if report.ok:
        print(f"ok: {report.records} records, {report.checkpoints} signed checkpoint(s) verify")
        for line in report.proved():
            print(f"  {line}")
        return 0
    print(f"FAILED: {report.records} records, {report.checkpoints} signed checkpoint(s)")
    if report.first_bad_index is not None:
        print(f"first bad index: {report.first_bad_index}")
    for finding in report.findings:
        print(f"  {finding}")
    return 1


def cmd_audit_show(args: argparse.Namespace) -> int:
    from interlock.audit import commands

    async def work(config: Config, store: AuditStore) -> int:
        found = await commands.show(store, args.ref)
        if found is None:
            print(f"no record {args.ref}", file=sys.stderr)
            return 1
        print(json.dumps(found, indent=2))
        return 0

    return _with_store(args, work)


def cmd_audit_tail(args: argparse.Namespace) -> int:
    from interlock.audit import commands

    async def work(config: Config, store: AuditStore) -> int:
        await commands.tail(store, args.n, args.follow, lambda line: print(line, flush=True))
        return 0

    try:
        return _with_store(args, work)
    except KeyboardInterrupt:
        return 0


def cmd_audit_proof(args: argparse.Namespace) -> int:
    from interlock.audit import commands

    async def work(config: Config, store: AuditStore) -> int:
        size = await store.size()
        if args.consistency:
            a, b = args.consistency
            if not 0 <= a <= b <= size:
                raise UsageError(f"need 0 <= A <= B <= {size}")
            proof = await commands.consistency_proof(store, a, b)
            out = {
                "first": a,
                "second": b,
                "first_root": commands.b64([await commands.root(store, a)])[0],
                "second_root": commands.b64([await commands.root(store, b)])[0],
                "proof": commands.b64(proof),
            }
        else:
            index, at = args.inclusion, args.size or size
            if not 0 <= index < at <= size:
                raise UsageError(f"need 0 <= INDEX < SIZE <= {size}")
            proof = await commands.inclusion_proof(store, index, at)
            out = {
                "index": index,
                "size": at,
                "root": commands.b64([await commands.root(store, at)])[0],
                "proof": commands.b64(proof),
            }
        print(json.dumps(out, indent=2))
        return 0

    return _with_store(args, work)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from interlock.audit import commands

    async def work(config: Config, store: AuditStore) -> int:
        out = await commands.export(store, _verifier(args, config), Path(args.dir))
        print(f"exported {out.records} records and {out.checkpoints} checkpoint(s) to {args.dir}")
        for problem in out.problems:
            print(f"damaged store: {problem}", file=sys.stderr)
        return 1 if out.problems else 0

    return _with_store(args, work)


def cmd_audit_tiles(args: argparse.Namespace) -> int:
    from interlock.audit.tiles import write_static

    async def work(config: Config, store: AuditStore) -> int:
        out = await write_static(store, _verifier(args, config), Path(args.dir))
        print(f"wrote the checkpoint at size {out.size} and {out.files} tile(s) to {args.dir}")
        return 0

    return _with_store(args, work)


def cmd_audit_replay(args: argparse.Namespace) -> int:
    from interlock.audit import commands

    async def work(config: Config, store: AuditStore) -> int:
        bundle = (
            Path(args.policy) if args.policy else (config.policy.bundle or bundled_policy_dir())
        )
        policy = PolicyManager(bundle).load()
        since = (
            time.mktime(time.strptime(args.since, "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if args.since
            else None
        )
        rows = await commands.replay(store, args.agent, since, commands.evaluator(policy))
        changed = [r for r in rows if r.changed]
        for r in rows:
            mark = "CHANGED" if r.changed else "same   " if r.replayable else "n/a    "
            print(
                f"{mark} #{r.index} {r.time} {r.operation} {r.target}: {r.recorded} -> {r.replayed}"
            )
        skipped = sum(not r.replayable for r in rows)
        print(
            f"{len(rows)} decisions replayed against policy {policy.version[:12]}, "
            f"{len(changed)} would change, {skipped} not replayable (no policy decided them)"
        )
        return 0

    return _with_store(args, work)


def cmd_audit_shadow_report(args: argparse.Namespace) -> int:
    from interlock.audit.shadow import parse_since, shadow_report

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError:
        raise UsageError("--since takes a UTC time, YYYY-MM-DDTHH:MM:SS") from None

    async def work(config: Config, store: AuditStore) -> int:
        report = await shadow_report(store, since, args.agent, args.protocol)
        print(json.dumps(report.to_json(), indent=2) if args.json else report.render(), end="")
        return 0

    return _with_store(args, work)


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from interlock.audit.factory import signer_for, witnesses_for
    from interlock.audit.log import AuditLog

    async def work(config: Config, store: AuditStore) -> int:
        log = AuditLog(
            store,
            signer_for(config),
            config.audit.origin,
            checkpoint_interval=0,
            witnesses=witnesses_for(config),
        )
        made = await log.checkpoint()
        size = made[0] if made else await store.size()
        print(f"checkpoint at size {size}")
        return 0

    return _with_store(args, work)


def cmd_audit_key(args: argparse.Namespace) -> int:
    from interlock.audit.factory import signer_for

    print(signer_for(_config(args.config)).verifier.encode())
    return 0


def _cosigner(args: argparse.Namespace) -> Any:
    from interlock.audit.checkpoint import load_or_create_key
    from interlock.audit.cosignature import Cosigner

    return Cosigner(args.name, load_or_create_key(Path(args.dir) / "witness.key"))


def cmd_witness_key(args: argparse.Namespace) -> int:
    print(_cosigner(args).key.encode())
    return 0


def cmd_witness_serve(args: argparse.Namespace) -> int:
    """Serve c2sp.org/tlog-witness for the logs given, until interrupted."""
    from aiohttp import web

    from interlock.audit.checkpoint import Verifier
    from interlock.audit.witness import WitnessState, witness_app

    logs = {}
    for text in args.log:
        verifier = Verifier.parse(Path(text).read_text("utf-8") if Path(text).is_file() else text)
        logs[verifier.name] = verifier
    state = WitnessState(_cosigner(args), logs, Path(args.dir) / "witness.json")
    host, _, port = args.listen.rpartition(":")
    print(f"witness {args.name} for {', '.join(logs)} on {args.listen}", flush=True)
    web.run_app(witness_app(state), host=host or "127.0.0.1", port=int(port), print=None)
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    from interlock.admin.client import call

    config = _config(args.config)
    action = args.agents_command
    if action == "list":
        for a in call(config, "GET", "/v1/agents")["agents"]:
            p = a["posture"]
            state = "isolated" if p["isolated"] else ", ".join(p["restrictions"]) or "normal"
            print(f"{a['id']:<24} {state}")
        return 0
    if action == "show":
        print(json.dumps(call(config, "GET", f"/v1/agents/{args.agent}"), indent=2))
        return 0
    if action == "mode":
        mode = None if args.mode == "config" else args.mode
        out = call(config, "POST", f"/v1/agents/{args.agent}/mode", {"mode": mode})
        for protocol, m in out["modes"].items():
            print(f"{protocol:<10} {m['mode']:<8} ({m['why']})")
        return 0
    body: dict[str, Any] = {"reason": args.reason} if args.reason else {}
    if action == "restrict":
        body["restrictions"] = args.restrictions
        if args.minutes is not None:
            body["minutes"] = args.minutes
    out = call(config, "POST", f"/v1/agents/{args.agent}/{action}", body)
    print(json.dumps(out["posture"], indent=2))
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print an scrypt hash for `[approvals.web] users` (the password from a prompt, or
    one line of stdin when it is not a terminal)."""
    import getpass

    from interlock.approvals.web import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        raise UsageError("use a password of at least 12 characters")
    print(hash_password(password))
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    from interlock.admin.client import call

    config = _config(args.config)
    if args.approvals_command == "list":
        for r in call(config, "GET", "/v1/approvals")["pending"]:
            print(f"{r['id']}  {r['risk']['tier']:<6} {r['summary']}")
        return 0
    if args.approvals_command == "show":
        print(json.dumps(call(config, "GET", f"/v1/approvals/{args.id}"), indent=2))
        return 0
    body = {"approver": args.approver, "reason": args.reason, "channel": "cli"}
    out = call(config, "POST", f"/v1/approvals/{args.id}/{args.approvals_command}", body)
    print(f"{'approved' if out['approved'] else 'denied'} {out['id']} as {out['approver']}")
    return 0


def cmd_ca_export(args: argparse.Namespace) -> int:
    """Print the CA certificate agents must trust for HTTPS through the proxy."""
    from interlock.proxies.http.server import CA_FILE

    path = _config(args.config).data_dir / "ca" / CA_FILE
    if not path.exists():
        raise UsageError(f"no CA yet at {path}; run `interlock up` with [http] once")
    sys.stdout.write(path.read_text("utf-8"))
    return 0


def cmd_mcp_run(args: argparse.Namespace) -> int:
    from interlock.runtime import MCP_TOKEN_ENV, run_mcp

    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise UsageError("interlock mcp run --agent ID -- COMMAND [ARGS...]: no server command")
    token = os.environ.get(MCP_TOKEN_ENV)
    return asyncio.run(run_mcp(_config(args.config), args.agent, argv, token))


async def _audit_tool_approval(config: Config, pin: Any) -> None:
    """The owner's acceptance of a changed tool goes into the audit log, with the hashes
    now pinned (the change itself was recorded when it was held)."""
    from interlock.audit.factory import log_for
    from interlock.core.model import (
        Action,
        Agent,
        Decision,
        Effect,
        Operation,
        Risk,
        Tier,
        new_decision_id,
    )
    from interlock.core.record import DecisionRecord

    details = {
        "mcp_server": pin.server,
        "method": "approve-tool",
        "pin": {"description_sha256": pin.description_sha256, "schema_sha256": pin.schema_sha256},
    }
    agent = Agent(f"owner:{pin.owner}", owner=pin.owner, authn="cli")
    action = Action(agent, "mcp", Operation.TOOL_CALL, pin.name, details)
    decision = Decision(
        new_decision_id(), Effect.ALLOW, Risk(0, Tier.LOW), "n/a",
        reasons=(f"tool change approved by its owner {pin.owner}",),
    )  # fmt: skip
    audit = log_for(config)
    await audit.start()
    try:
        await audit.append(DecisionRecord(decision, action, {}), durable=True)
    finally:
        await audit.close()


def cmd_mcp_tools(args: argparse.Namespace) -> int:
    from interlock.approvals.pins import PinStore

    config = _config(args.config)
    pins = PinStore(config.data_dir / config.mcp.pins)
    try:
        if args.mcp_command == "tools":
            for pin in pins.pins(args.server):
                print(json.dumps(pin.as_json()))
            return 0
        try:
            pin = pins.approve(args.server, args.owner, args.tool)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
        asyncio.run(_audit_tool_approval(config, pin))
        print(f"approved: {pin.name} of {pin.server} for {pin.owner} (description "
              f"{pin.description_sha256[:12]}, schema {pin.schema_sha256[:12]})")  # fmt: skip
        return 0
    finally:
        pins.close()


def cmd_bench(args: argparse.Namespace) -> int:
    from interlock.bench.runner import main as bench_main

    limits = _config(args.config).bench.budgets if args.config else {}
    command = "interlock bench" + (f" --suite {args.suite}" if args.suite != "all" else "")
    command += " --quick" if args.quick else ""
    return bench_main(
        args.suite,
        json_path=args.json,
        quick=args.quick,
        report_dir=args.report,
        limits=limits,
        show_progress=not args.no_progress,
        command=command,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interlock", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines for people (text) or collectors (json); env INTERLOCK_LOG_FORMAT",
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up",
        help="run what the config enables (embedded defaults without one)",
        description="Run what the config enables, until SIGINT or SIGTERM (SIGHUP reloads "
        "the policy and [agents]). The config is -c FILE, else ./interlock.toml if it "
        "exists (the banner names it), else the embedded defaults: the admin API "
        "(127.0.0.1:9180), the HTTP(S) proxy (127.0.0.1:8080) and ext_authz (gRPC "
        "127.0.0.1:9191, HTTP 127.0.0.1:9192), with agent demo, whose token is created "
        "once in .interlock/demo.token. The banner lists every endpoint, the proxies not "
        "configured with the lines that enable them, and lines to try.",
    )
    up.add_argument("-c", "--config", help=CONFIG_HELP)
    up.add_argument(
        "--only", help=f"run just these components (comma-separated: {', '.join(COMPONENTS)})"
    )
    up.set_defaults(func=cmd_up)

    host = sub.add_parser(
        "host",
        help="fence the agents' local users in: nftables lockdown and tool ACLs (root)",
        description="Keep the nftables table inet interlock for the users in [host.agents]: "
        "they reach only interlock's proxies; posture (isolate, no_egress, tool:NAME) is "
        "followed from the shared state store; dropped connections are audited. See "
        "docs/host.md.",
    )
    host.add_argument("-c", "--config", help=CONFIG_HELP)
    host.set_defaults(func=cmd_host)

    init = sub.add_parser(
        "init",
        help="write a commented interlock.toml equal to the embedded defaults",
        description="Write a commented config that runs what `interlock up` runs with no "
        "file; edit it to enable more. Agent demo's token is taken from "
        ".interlock/demo.token (created there first if missing), as `up` would.",
    )
    init.add_argument(
        "path", nargs="?", default="interlock.toml", help="where (default: ./interlock.toml)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)

    pol = sub.add_parser("policy", help="check, evaluate and test policy bundles")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    for name, func, text in (
        ("check", cmd_policy_check, "compile the bundle and print its version"),
        ("eval", cmd_policy_eval, "evaluate an input document or a whole action"),
        ("test", cmd_policy_test, "run the bundle's test_ rules like `opa test`"),
    ):
        sp = psub.add_parser(name, help=text)
        sp.add_argument("--bundle", help="bundle directory (default: config's, else bundled)")
        sp.add_argument("-c", "--config", help="take the bundle from this interlock.toml")
        sp.set_defaults(func=func)
        if name == "eval":
            src = sp.add_mutually_exclusive_group(required=True)
            src.add_argument("--input", help="policy input document (JSON file, - for stdin)")
            src.add_argument("--action", help="an action (JSON) to run through the whole PDP")
            sp.add_argument("--entrypoint", default=DECISION_ENTRYPOINT)
        if name == "test":
            sp.add_argument("-v", "--verbose", action="store_true", help="list passing tests")

    audit = sub.add_parser("audit", help="verify, inspect, export and replay the audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True)

    def audit_cmd(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        sp = asub.add_parser(name, help=text)
        sp.add_argument("-c", "--config", help=CONFIG_HELP)
        sp.add_argument("--store", help="audit store URL (default: the config's)")
        sp.set_defaults(func=func)
        return sp

    sp = audit_cmd("verify", cmd_audit_verify, "recompute the tree, check every checkpoint")
    sp.add_argument("--key", help="trusted verifier key (NAME+ID+KEY, or a file with it)")
    sp.add_argument("--bundle", help="verify an export directory instead of the store")
    sp.add_argument(
        "--since",
        metavar="CHECKPOINT",
        help="a file holding a checkpoint you kept earlier: prove the log still extends it",
    )
    sp.add_argument(
        "--max-unsigned-age",
        type=float,
        metavar="SECONDS",
        help="fail when records past the latest signed checkpoint are older than this "
        "(default: twice audit.checkpoint_interval)",
    )
    sp.add_argument(
        "--witness",
        action="append",
        metavar="KEY",
        help="a witness key you trust (NAME+ID+KEY, or a file with it); repeat for several",
    )
    sp.add_argument(
        "--quorum",
        type=int,
        metavar="K",
        help="require cosignatures by K of the --witness keys on the latest checkpoint "
        "(default: all of them)",
    )
    sp = audit_cmd("show", cmd_audit_show, "a record (by decision id or index) and its proof")
    sp.add_argument(
        "ref",
        help="a decision id (x-interlock-decision-id, a denial's body, a log line) or a "
        "record index (0 is the first)",
    )
    sp = audit_cmd("tail", cmd_audit_tail, "the last records, as canonical JSON lines")
    sp.add_argument("-n", type=int, default=10, help="how many (default 10)")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    sp = audit_cmd("proof", cmd_audit_proof, "an inclusion or consistency proof")
    group = sp.add_mutually_exclusive_group(required=True)
    group.add_argument("--consistency", nargs=2, type=int, metavar=("A", "B"))
    group.add_argument("--inclusion", type=int, metavar="INDEX")
    sp.add_argument("--size", type=int, help="tree size for --inclusion (default: current)")
    sp = audit_cmd("export", cmd_audit_export, "records, checkpoints and proofs as files")
    sp.add_argument("dir")
    sp.add_argument("--key", help=argparse.SUPPRESS)
    sp = audit_cmd("tiles", cmd_audit_tiles, "the log as static tlog-tiles files")
    sp.add_argument("dir")
    sp.add_argument("--key", help=argparse.SUPPRESS)
    sp = audit_cmd("replay", cmd_audit_replay, "re-decide an agent's actions under a policy")
    sp.add_argument("--agent", required=True)
    sp.add_argument("--since", help="UTC time, YYYY-MM-DDTHH:MM:SS")
    sp.add_argument("--policy", help="bundle directory (default: the config's)")
    sp = audit_cmd(
        "shadow-report", cmd_audit_shadow_report, "what enforcement would have changed (shadow)"
    )
    sp.add_argument("--since", help="UTC time, YYYY-MM-DDTHH:MM:SS")
    sp.add_argument("--agent")
    sp.add_argument("--protocol", help="http, mcp, postgres, ssh, envoy")
    sp.add_argument("--json", action="store_true", help="the report as JSON, for scripts")
    audit_cmd("checkpoint", cmd_audit_checkpoint, "sign a checkpoint of the current tree now")
    audit_cmd("key", cmd_audit_key, "print the log's verifier (public) key")

    witness = sub.add_parser("witness", help="cosign other logs' checkpoints (tlog-witness)")
    wsub = witness.add_subparsers(dest="witness_command", required=True)
    for name, func, text in (
        ("serve", cmd_witness_serve, "serve POST /add-checkpoint for the given logs"),
        ("key", cmd_witness_key, "print this witness's verifier key (created on first use)"),
    ):
        sp = wsub.add_parser(name, help=text)
        sp.add_argument("--name", required=True, help="the witness's name (e.g. example.com/w1)")
        sp.add_argument("--dir", required=True, help="where its key and state are kept")
        sp.set_defaults(func=func)
        if name == "serve":
            sp.add_argument(
                "--log",
                action="append",
                required=True,
                metavar="KEY",
                help="a log's verifier key (its name is the log's origin); repeat for several",
            )
            sp.add_argument("--listen", default="127.0.0.1:8470", help="HOST:PORT")

    agents = sub.add_parser("agents", help="see and change agents' posture (admin API)")
    asub = agents.add_subparsers(dest="agents_command", required=True)
    sp = asub.add_parser("list", help="every agent and its posture")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_agents)
    sp = asub.add_parser("show", help="posture, taints and recent decisions of one agent")
    sp.add_argument("agent")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_agents)
    sp = asub.add_parser("restrict", help="add restrictions (read_only, no_egress, tool:X, ...)")
    sp.add_argument("agent")
    sp.add_argument("restrictions", nargs="+")
    sp.add_argument("--minutes", type=float, help="lift them after this long")
    sp.add_argument("--reason", default="")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_agents)
    sp = asub.add_parser("mode", help="enforce or shadow this agent now (config: as configured)")
    sp.add_argument("agent")
    sp.add_argument("mode", choices=["enforce", "shadow", "config"])
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_agents)
    for name, text in (
        ("isolate", "end every session, deny everything"),
        ("restore", "lift it all"),
    ):
        sp = asub.add_parser(name, help=text)
        sp.add_argument("agent")
        sp.add_argument("--reason", default="")
        sp.add_argument("-c", "--config", help=CONFIG_HELP)
        sp.set_defaults(func=cmd_agents)

    approvals = sub.add_parser("approvals", help="held actions waiting for a human")
    psub = approvals.add_subparsers(dest="approvals_command", required=True)
    sp = psub.add_parser("list", help="pending approvals")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_approvals)
    sp = psub.add_parser("show", help="one pending approval, with the action's hash")
    sp.add_argument("id")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_approvals)
    for verb in ("approve", "deny"):
        sp = psub.add_parser(verb, help=f"{verb} a held action")
        sp.add_argument("id")
        sp.add_argument("--as", dest="approver", required=True, help="who answers (the owner)")
        sp.add_argument("--reason", default="")
        sp.add_argument("-c", "--config", help=CONFIG_HELP)
        sp.set_defaults(func=cmd_approvals)
    sp = psub.add_parser("hash-password", help="hash a password for [approvals.web] users")
    sp.set_defaults(func=cmd_hash_password)

    ca = sub.add_parser("ca", help="the HTTPS interception CA")
    casub = ca.add_subparsers(dest="ca_command", required=True)
    sp = casub.add_parser("export", help="print the CA certificate agents must trust")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_ca_export)

    mcp = sub.add_parser("mcp", help="the stdio MCP gateway and pinned tools")
    msub = mcp.add_subparsers(dest="mcp_command", required=True)
    sp = msub.add_parser("run", help="relay a stdio MCP server, deciding every call")
    sp.add_argument("--agent", required=True, help="the agent (its token in $INTERLOCK_TOKEN)")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    sp.set_defaults(func=cmd_mcp_run)
    sp = msub.add_parser("tools", help="pinned tools, held ones with why")
    sp.add_argument("--server", help="only this server (its command line or URL)")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_mcp_tools)
    sp = msub.add_parser("approve-tool", help="accept a held tool as the server offers it now")
    sp.add_argument("--server", required=True, help="its command line or URL, as `tools` shows")
    sp.add_argument("--owner", required=True, help="whose pin, as `tools` shows")
    sp.add_argument("tool")
    sp.add_argument("-c", "--config", help=CONFIG_HELP)
    sp.set_defaults(func=cmd_mcp_tools)

    bench = sub.add_parser("bench", help="run benchmark suites against their baselines")
    bench.add_argument(
        "--suite",
        default="all",
        help="all (default) or some of pdp,audit,postgres,http,extauthz,ssh,mcp,e2e",
    )
    bench.add_argument("--json", help="write machine-readable results here")
    bench.add_argument("--report", metavar="DIR", help="write report.md, plots and JSON here")
    bench.add_argument("--quick", action="store_true", help="short phases: under two minutes")
    bench.add_argument("-c", "--config", help="interlock.toml with [bench.budgets] limits")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from interlock.logs import setup

    setup(args.verbose, args.log_format or os.environ.get("INTERLOCK_LOG_FORMAT", "text"))
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"policy error: {exc}", file=sys.stderr)
        return 1
    except InterlockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        # Malformed keys, notes or proofs given on the command line.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
