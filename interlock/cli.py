"""The `interlock` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from interlock.config import Config, load_config
from interlock.core.bundle import bundled_policy_dir, load_bundle
from interlock.core.policy import DECISION_ENTRYPOINT, PolicyManager
from interlock.core.regotest import run_tests
from interlock.core.serialization import ActionFormatError, action_from_json, decision_to_json
from interlock.errors import ConfigError, InterlockError, PolicyError

EXAMPLE_CONFIG = Path(__file__).resolve().parent / "config_example.toml"


class UsageError(Exception):
    """A command-line mistake: printed without a traceback, exit status 2."""


def _config(path: str | None) -> Config:
    return load_config(path) if path else Config.embedded()


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


def cmd_up(args: argparse.Namespace) -> int:
    from interlock.runtime import serve

    asyncio.run(serve(_config(args.config)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; use --force to overwrite")
    target.write_text(EXAMPLE_CONFIG.read_text("utf-8"), "utf-8")
    target.chmod(0o600)
    print(f"wrote {target}")
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


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.runner import main as bench_main

    return bench_main(args.suite, json_path=args.json, quick=args.quick)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interlock", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run what the config enables (embedded defaults without one)")
    up.add_argument("-c", "--config", help="interlock.toml")
    up.set_defaults(func=cmd_up)

    init = sub.add_parser("init", help="write a commented example interlock.toml")
    init.add_argument("path", nargs="?", default="interlock.toml")
    init.add_argument("--force", action="store_true")
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

    bench = sub.add_parser("bench", help="run benchmark suites against their baselines")
    bench.add_argument("--suite", default="pdp")
    bench.add_argument("--json", help="write machine-readable results here")
    bench.add_argument("--quick", action="store_true", help="fewer iterations")
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    return code


if __name__ == "__main__":
    sys.exit(main())
