"""A statement decided at Parse and executed later: when the policy was reloaded in
between, the Execute is decided again and runs only on the same terms (the agent-mode
case is in test_shadow.py). Real asyncpg clients, a real server, a real reload."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from interlock.core.bundle import bundled_policy_dir
from tests.proxies.postgres.conftest import HR_TOKEN, Proxied

pytestmark = pytest.mark.integration


def reload_with(proxied: Proxied, bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Reload the policy from `bundle` with `change` made to its data."""
    path = bundle / "data.json"
    data = json.loads(path.read_text())
    change(data["interlock"]["policy"])
    path.write_text(json.dumps(data))
    proxied.pdp.policy.load()


@pytest.fixture
def bundle(proxied: Proxied, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundled_policy_dir(), copy)
    proxied.pdp.policy.bundle_dir = copy
    proxied.pdp.policy.load()
    return copy


async def test_a_prepared_read_stops_once_a_reloaded_policy_forbids_reads(
    proxied: Proxied, bundle: Path
) -> None:
    conn = await asyncpg.connect(proxied.dsn())
    try:
        count = await conn.prepare("select count(*) from orders")
        assert await count.fetchval() == 20
        reload_with(
            proxied, bundle, lambda p: p.update(forbidden_operations={"postgres": ["read"]})
        )
        for _ in range(2):  # every Execute, not only the first after the reload
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="decided again"):
                await count.fetchval()
        reload_with(proxied, bundle, lambda p: p.update(forbidden_operations={}))
        assert await count.fetchval() == 20  # allowed again on the same terms: runs
    finally:
        await conn.close()


async def test_a_prepared_read_whose_masks_changed_must_be_prepared_again(
    proxied: Proxied, bundle: Path
) -> None:
    """hr reads names unmasked (its role is exempt); the reloaded policy masks them: the
    plan made at Parse has no mask, so the statement is refused rather than run on it,
    and prepared again it is masked."""
    conn = await asyncpg.connect(proxied.dsn("hr", HR_TOKEN))
    try:
        names = await conn.prepare("select name from payroll order by id")
        assert [r["name"] for r in await names.fetch()] == ["ann", "bob"]
        reload_with(proxied, bundle, lambda p: p["mask"].update(exempt_roles=[]))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="masks changed"):
            await names.fetch()
        again = await conn.prepare("select name, 1 from payroll order by id")
        assert [r["name"] for r in await again.fetch()] == [None, None]
    finally:
        await conn.close()
