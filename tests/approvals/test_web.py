"""The approvals page: a real headless Chromium signs in, sees the held request and
approves it; plain HTTP clients check the forgery defences, escaping and sign-in limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from interlock.approvals.web import hash_password
from interlock.config import ApprovalsConfig, WebApprovalsConfig
from interlock.core.model import Action, Agent, Operation
from tests.approvals.conftest import OWNER, TOKEN, Rig, RigFactory

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"
BOB = "bob@example.com"
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    return {OWNER: hash_password(PASSWORD), BOB: hash_password(PASSWORD + "!")}


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("headless Chromium is needed: apt-get install chromium-driver", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for drivers online
    with tempfile.TemporaryDirectory() as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ):  # fmt: skip
            opts.add_argument(flag)
        try:
            driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        except WebDriverException as exc:
            pytest.fail(f"Chromium did not start: {exc.msg}", pytrace=False)
        try:
            yield driver
        finally:
            driver.quit()


async def web_rig(make_rig: RigFactory, users: dict[str, str]) -> Rig:
    return await make_rig(ApprovalsConfig(web=WebApprovalsConfig(users=users)))


def _sign_in_and_approve(driver: webdriver.Chrome, admin: str, decision_id: str) -> str:
    driver.delete_all_cookies()
    driver.get(admin + "/ui/approvals")
    assert driver.current_url.endswith("/ui/login"), "not signed in: sent to the sign-in page"
    driver.find_element(By.NAME, "user").send_keys(OWNER)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait = WebDriverWait(driver, 15)
    row = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-id="{decision_id}"]'))
    )
    assert "/report" in row.text
    assert "medium" in row.text
    row.find_element(By.CSS_SELECTOR, 'button[value="approve"]').click()
    return str(wait.until(ec.presence_of_element_located((By.ID, "msg"))).text)


async def test_the_owner_approves_in_a_browser_and_the_request_proceeds(
    make_rig: RigFactory, users: dict[str, str], chrome: webdriver.Chrome
) -> None:
    rig = await web_rig(make_rig, users)
    task = rig.held()
    held = await rig.pending()
    message = await asyncio.to_thread(_sign_in_and_approve, chrome, rig.admin, held.decision_id)
    assert message == f"approved {held.decision_id}"
    assert (await task).text == "done"
    details, _ = rig.outcome(held.decision_id)
    assert (details["approver"], details["channel"]) == (OWNER, "web")


@contextlib.asynccontextmanager
async def signed_in(rig: Rig, user: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=rig.admin, headers={"Origin": rig.admin}, timeout=10
    ) as c:
        resp = await c.post("/ui/login", data={"user": user, "password": password})
        assert resp.status_code == 303, resp.text
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        yield c


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


async def test_forged_posts_are_refused(make_rig: RigFactory, users: dict[str, str]) -> None:
    rig = await web_rig(make_rig, users)
    task = rig.held()
    held = await rig.pending()
    url = f"/ui/approvals/{held.decision_id}/approve"
    async with signed_in(rig, OWNER, PASSWORD) as c:
        page = await c.get("/ui/approvals")
        token = csrf_of(page.text)
        assert (await c.post(url, data={})).status_code == 403, "no CSRF token"
        assert (await c.post(url, data={"csrf": "x" * 43})).status_code == 403, "wrong token"
        cross = await c.post(url, data={"csrf": token}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403, "another origin"
        del c.headers["Origin"]
        assert (await c.post(url, data={"csrf": token})).status_code == 403, "no Origin/Referer"
        assert rig.rt.holds.pending(), "none of those answered"
        c.headers["Origin"] = rig.admin
        assert (await c.post(url, data={"csrf": token})).status_code == 303
    assert (await task).text == "done"
    async with httpx.AsyncClient(base_url=rig.admin, headers={"Origin": rig.admin}) as anon:
        assert (await anon.post(url, data={"csrf": token})).status_code == 403, "no session"


async def test_someone_else_cannot_answer_for_the_owner(
    make_rig: RigFactory, users: dict[str, str]
) -> None:
    rig = await web_rig(make_rig, users)
    task = rig.held()
    held = await rig.pending()
    async with signed_in(rig, BOB, PASSWORD + "!") as c:
        page = await c.get("/ui/approvals")
        assert held.decision_id not in page.text, "not shown to someone who may not answer"
        assert 'id="empty"' in page.text
        refused = await c.post(
            f"/ui/approvals/{held.decision_id}/approve", data={"csrf": csrf_of(page.text)}
        )
        assert refused.status_code == 403
    assert rig.rt.holds.pending()
    rig.rt.holds.answer(held.decision_id, False, OWNER, "test")
    assert (await task).status_code == 403


async def test_agent_text_is_escaped_and_the_page_cannot_be_framed(
    make_rig: RigFactory, users: dict[str, str]
) -> None:
    rig = await web_rig(make_rig, users)
    hostile = Action(
        Agent("coder", owner=OWNER), "postgres", Operation.DDL, "public.t",
        {},
    )  # fmt: skip
    sql = "select 1; -- <script>alert(1)</script> \u202edrop table t"
    decision = await rig.rt.pdp.decide(hostile)
    task = asyncio.create_task(rig.rt.holds.wait(decision, 30, hostile, sql))
    held = await rig.pending()
    async with signed_in(rig, OWNER, PASSWORD) as c:
        page = await c.get("/ui/approvals")
        assert held.decision_id in page.text
        assert "<script>" not in page.text
        assert "&lt;script&gt;" in page.text
        assert "\u202e" not in page.text, "a bidi override cannot reorder what is shown"
        assert "\\u202edrop table t" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["cache-control"] == "no-store"
    rig.rt.holds.answer(held.decision_id, False, OWNER, "test")
    await task


async def test_wrong_passwords_are_refused_then_throttled(
    make_rig: RigFactory, users: dict[str, str]
) -> None:
    rig = await web_rig(make_rig, users)
    async with httpx.AsyncClient(base_url=rig.admin, headers={"Origin": rig.admin}) as c:
        unknown = await c.post("/ui/login", data={"user": "nobody", "password": "x"})
        assert unknown.status_code == 401
        for _ in range(5):
            wrong = await c.post("/ui/login", data={"user": OWNER, "password": "guess"})
            assert wrong.status_code == 401
        limited = await c.post("/ui/login", data={"user": OWNER, "password": PASSWORD})
        assert limited.status_code == 429, "even the right password waits out the limit"
        cross = await c.post(
            "/ui/login",
            data={"user": BOB, "password": PASSWORD + "!"},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert (await c.get("/ui/approvals")).status_code == 303


async def test_guesses_by_others_do_not_lock_out_a_browser_that_signed_in_before(
    make_rig: RigFactory, users: dict[str, str]
) -> None:
    # (review: 5 wrong passwords for a name a minute, or 20 tries from the address a
    # reverse proxy gives everyone, kept the person out of the page)
    rig = await web_rig(make_rig, users)
    headers = {"Origin": rig.admin}
    async with (
        httpx.AsyncClient(base_url=rig.admin, headers=headers) as owner,
        httpx.AsyncClient(base_url=rig.admin, headers=headers) as other,
        httpx.AsyncClient(base_url=rig.admin, headers=headers) as fresh,
    ):
        first = await owner.post("/ui/login", data={"user": OWNER, "password": PASSWORD})
        assert first.status_code == 303
        assert "interlock_device" in owner.cookies
        for i in range(25):  # by name, then from the address everyone shares
            user = OWNER if i < 5 else f"guess{i}@example.com"
            assert (
                await other.post("/ui/login", data={"user": user, "password": "x"})
            ).status_code in (401, 429)
        again = await owner.post("/ui/login", data={"user": OWNER, "password": PASSWORD})
        assert again.status_code == 303, "the browser that signed in before gets in"
        locked = await fresh.post("/ui/login", data={"user": OWNER, "password": PASSWORD})
        assert locked.status_code == 429, "a browser never signed in waits out the limit"
        # The cookie is the owner's: it names no one else, and a forged one counts nothing.
        assert (
            await owner.post("/ui/login", data={"user": BOB, "password": "x"})
        ).status_code == 429
        cookie = owner.cookies["interlock_device"]
        forged_cookie = cookie[:-1] + ("1" if cookie.endswith("0") else "0")
        fresh.cookies.set("interlock_device", forged_cookie, path="/ui/login")
        forged = await fresh.post("/ui/login", data={"user": OWNER, "password": PASSWORD})
        assert forged.status_code == 429


async def test_the_page_is_off_without_users_and_needs_no_api_token(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    async with httpx.AsyncClient(base_url=rig.admin) as c:
        assert (await c.get("/ui/login")).status_code == 404
        assert (await c.get("/v1/approvals")).status_code == 401, "the API still needs its token"


async def test_an_agent_cannot_reach_the_page_through_the_proxy_even_with_loopback_allowed(
    make_rig: RigFactory, users: dict[str, str]
) -> None:
    # The rig allows 127.0.0.0/8 (allow_networks), where the admin server listens: the
    # agent could otherwise guess its owner's password, or lock the owner out by name.
    rig = await web_rig(make_rig, users)
    port = rig.admin.rsplit(":", 1)[1]
    async with httpx.AsyncClient(proxy=rig.proxy, timeout=30) as agent:
        for base in (rig.admin, f"http://localhost:{port}", f"http://127.0.0.2:{port}"):
            guess = await agent.post(
                base + "/ui/login",
                data={"user": OWNER, "password": "guess"},
                headers={"Origin": rig.admin},
            )
            assert guess.status_code == 403, (base, guess.text)
            assert "interlock's own" in guess.json()["reason"]
            assert (await agent.get(base + "/healthz")).status_code == 403
    async with httpx.AsyncClient(base_url=rig.admin, headers={"Origin": rig.admin}) as owner:
        signed = await owner.post("/ui/login", data={"user": OWNER, "password": PASSWORD})
        assert signed.status_code == 303, "the agent's guesses did not lock its owner out"


async def test_a_tunnel_to_the_admin_server_is_refused_too(make_rig: RigFactory) -> None:
    rig = await make_rig()
    admin = rig.admin.removeprefix("http://")
    proxy = rig.rt.endpoints["http"].removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(proxy[0], int(proxy[1]))
    creds = base64.b64encode(f"coder:{TOKEN}".encode()).decode()
    writer.write(
        f"CONNECT {admin} HTTP/1.1\r\nHost: {admin}\r\n"
        f"Proxy-Authorization: Basic {creds}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.read(4096)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403"), head
    assert b"interlock's own listener" in head
