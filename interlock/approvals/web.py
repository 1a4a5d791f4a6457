"""The approvals page on the admin server, and the pages behind webhook links.

People sign in with a name and password from `[approvals.web] users` (scrypt hashes made
by `interlock approvals hash-password`), not with the admin API token: the approver
recorded in the audit log is then the person who clicked, and the owner-only rule can
hold. The session is a random id in an HttpOnly, SameSite=Strict cookie, kept server-side.

Forgery defences, each enough on its own for today's browsers, together for the rest:
SameSite=Strict cookies; every state-changing POST carries the session's CSRF token
(compared in constant time); and POSTs must come from our own origin (`Origin`, else
`Referer`; neither = refused). The pages set a CSP with `frame-ancestors 'none'` (no
clickjacking of the buttons), no scripts at all, `Referrer-Policy: same-origin` (link
tokens stay out of other sites' logs) and `Cache-Control: no-store`. Everything shown is
HTML-escaped: summaries contain agent-controlled text (SQL, command lines, paths).

Webhook links (`/ui/approvals/link/<token>`) need no session: the signed token is the
credential. GET shows what will be answered with one button; only the POST answers, so a
link preview fetching the URL answers nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from interlock.approvals.holds import Holds
from interlock.approvals.links import LinkError, LinkSigner
from interlock.approvals.request import ApprovalError, ApprovalRequest
from interlock.config import WebApprovalsConfig

log = logging.getLogger(__name__)

COOKIE = "interlock_session"
DEVICE_COOKIE = "interlock_device"
"""Set on a browser that signed in as a person: its sign-ins as that person are throttled
on their own, so guesses by others (by name or from a shared address) cannot lock the
person out (OWASP's device cookies)."""
DEVICE_TTL = 30 * 86400.0
MAX_FAILURES = 5
"""Sign-in attempts per name per minute that may fail before more are refused."""
MAX_PER_ADDRESS = 20
"""Sign-in attempts per client address per minute."""
HASHING = asyncio.Semaphore(2)
"""Password checks at once (scrypt takes 16 MiB and tens of ms each)."""
MAX_TRACKED = 10_000
"""Names whose recent sign-in failures are remembered."""
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    params = f"{SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}"
    return f"scrypt${params}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=64 * 1024 * 1024,
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass
class _Session:
    user: str
    csrf: str
    expires: float


@dataclass
class WebApprovals:
    """State of the page: sessions and sign-in throttling (in memory, per instance)."""

    holds: Holds
    config: WebApprovalsConfig
    links: LinkSigner | None = None
    public_url: str | None = None
    clock: Callable[[], float] = time.time
    sessions: dict[str, _Session] = field(default_factory=dict)
    failures: dict[str, deque[float]] = field(default_factory=dict)
    """Recent attempts per name and per client address (`@<address>`), counted before
    the password is checked, so concurrent guesses count too."""
    _dummy: str = field(default_factory=lambda: hash_password(secrets.token_hex(8)))
    _device_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Signs device cookies; per process, so a restart forgets every device."""

    def device_cookie(self, user: str, now: float) -> str:
        """A device cookie for `user`: a random id, the name and an expiry, signed."""
        body = f"{secrets.token_urlsafe(16)}.{int(now + DEVICE_TTL)}.{user.encode().hex()}"
        return f"{body}.{self._device_sig(body)}"

    def device(self, request: web.Request, user: str) -> str | None:
        """The id of the device cookie `request` carries for `user`, if it is one this
        instance signed and it has not expired; None otherwise."""
        token, _, sig = request.cookies.get(DEVICE_COOKIE, "").rpartition(".")
        parts = token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(sig, self._device_sig(token)):
            return None
        device, expires, named = parts
        if named != user.encode().hex() or not expires.isdigit() or int(expires) <= self.clock():
            return None
        return device

    def _device_sig(self, body: str) -> str:
        return hmac.new(self._device_key, body.encode(), hashlib.sha256).hexdigest()

    def prune(self, now: float) -> None:
        """Forget expired sessions and old failures (bounded memory under attack)."""
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[sid]
        for name in [n for n, q in self.failures.items() if q and q[-1] <= now - 60]:
            del self.failures[name]
        while len(self.failures) > MAX_TRACKED:
            del self.failures[next(iter(self.failures))]

    def session(self, request: web.Request) -> _Session | None:
        sid = request.cookies.get(COOKIE, "")
        found = self.sessions.get(sid)
        if found is None or found.expires <= self.clock():
            self.sessions.pop(sid, None)
            return None
        return found


WEB_KEY = web.AppKey("approvals_web", WebApprovals)

_STYLE = (
    "body{font:15px system-ui,sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;"
    "padding:.4em;text-align:left;vertical-align:top}code{word-break:break-all}"
    ".high{color:#a00}.msg{padding:.5em;background:#eef}form{display:inline}"
)
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: browsers then send `Origin: null` on our own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
e = html.escape


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{e(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


def _state(request: web.Request) -> WebApprovals:
    return request.app[WEB_KEY]


def _same_origin(request: web.Request, state: WebApprovals) -> bool:
    """The POST came from a page of ours (Origin, else Referer; neither = no)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        ref = request.headers.get("Referer")
        if not ref:
            return False
        parts = urlsplit(ref)
        origin = f"{parts.scheme}://{parts.netloc}"
    # Not the Host header (DNS rebinding could make it anything): the configured URL, or
    # the address the admin server is bound to.
    if not state.public_url:
        return False
    parts = urlsplit(state.public_url)
    return origin == f"{parts.scheme}://{parts.netloc}"


def _same_token(sent: object, expected: str) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), expected.encode())


def _forbidden(message: str, request: web.Request | None = None) -> web.Response:
    if request is not None:
        log.warning("approval page: %s (from %s)", message, request.remote)
    return _page("Refused", f"<p>{e(message)}</p>", status=403)


async def login_form(request: web.Request) -> web.Response:
    if not _state(request).config.users:
        return _page("Approvals", "<p>No approvers are configured ([approvals.web]).</p>", 404)
    return _page(
        "Sign in to approve",
        '<form method="post" action="/ui/login">'
        '<p><label>Name <input name="user" autocomplete="username" required></label></p>'
        '<p><label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label></p>'
        '<p><button type="submit">Sign in</button></p></form>',
    )


async def login(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    if not _same_origin(request, state):
        return _forbidden("cross-site request refused", request)
    form = await request.post()
    user, password = str(form.get("user", ""))[:128], str(form.get("password", ""))[:1024]
    now = state.clock()
    state.prune(now)
    device = state.device(request, user)
    # A browser that signed in as this person before is counted on its own: guesses by
    # name or from its address (a shared reverse proxy's) do not lock it out.
    counters = (
        [(state.failures.setdefault(f"#{device}", deque(maxlen=MAX_FAILURES)), MAX_FAILURES)]
        if device is not None
        else [
            (state.failures.setdefault(user, deque(maxlen=MAX_FAILURES)), MAX_FAILURES),
            (
                state.failures.setdefault(f"@{request.remote}", deque(maxlen=MAX_PER_ADDRESS)),
                MAX_PER_ADDRESS,
            ),
        ]
    )
    for recent, limit in counters:
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= limit:
            log.warning("approval page: sign-in as %r refused: too many attempts", user)
            return _page("Sign in to approve", "<p>Too many attempts; wait a minute.</p>", 429)
    for recent, _ in counters:
        recent.append(now)  # counted now, so parallel guesses cannot all pass the check
    stored = state.config.users.get(user)
    async with HASHING:
        # Hash either way, so timing does not tell which names exist.
        ok = await asyncio.to_thread(check_password, password, stored or state._dummy)
    if stored is None or not ok:
        log.warning("approval page: sign-in as %r failed (from %s)", user, request.remote)
        return _page("Sign in to approve", "<p>Wrong name or password.</p>", 401)
    state.failures.pop(user, None)
    sid = secrets.token_urlsafe(32)
    state.sessions[sid] = _Session(user, secrets.token_urlsafe(32), now + state.config.session_ttl)
    resp = web.HTTPSeeOther("/ui/approvals")
    resp.set_cookie(
        COOKIE, sid, httponly=True, samesite="Strict", path="/ui",
        secure=state.config.secure_cookies, max_age=int(state.config.session_ttl),
    )  # fmt: skip
    if device is None:
        resp.set_cookie(
            DEVICE_COOKIE, state.device_cookie(user, now), httponly=True, samesite="Strict",
            path="/ui/login", secure=state.config.secure_cookies, max_age=int(DEVICE_TTL),
        )  # fmt: skip
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    session = state.session(request)
    if session is not None and _same_origin(request, state):
        form = await request.post()
        if _same_token(form.get("csrf"), session.csrf):
            state.sessions.pop(request.cookies.get(COOKIE, ""), None)
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(COOKIE, path="/ui")
    raise resp


async def _pending(state: WebApprovals) -> list[ApprovalRequest]:
    try:
        return await state.holds.pending_anywhere()
    except ApprovalError:
        return state.holds.pending()  # Redis away: what this instance holds


def _row(r: ApprovalRequest, csrf: str, now: float) -> str:
    tier = str(r.risk.get("tier", ""))
    buttons = "".join(
        f'<form method="post" action="/ui/approvals/{e(r.decision_id)}/{verb}">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<button type="submit" name="verb" value="{verb}">{verb.title()}</button></form> '
        for verb in ("approve", "deny")
    )
    return (
        f'<tr data-id="{e(r.decision_id)}"><td>{e(r.agent)}<br><small>owner: '
        f"{e(r.owner or '-')}</small></td><td>{e(r.summary)}<br><small>{e(r.kind)}</small>"
        f"<pre>{e(r.text)}</pre><small>sha256 <code>{e(r.action_hash)}</code></small></td>"
        f'<td class="{e(tier)}">{e(tier)} ({e(str(r.risk.get("score", "")))})</td>'
        f"<td>{max(0, int(r.expires - now))} s</td><td>{buttons}</td></tr>"
    )


async def listing(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    session = state.session(request)
    if session is None:
        raise web.HTTPSeeOther("/ui/login")
    message = str(request.query.get("done", ""))[:200]
    # Only what this person may answer: others' statements are not theirs to read.
    pending = sorted(
        (r for r in await _pending(state) if state.holds.may_answer(r, session.user)),
        key=lambda r: r.created,
    )
    now = state.clock()
    rows = "".join(_row(r, session.csrf, now) for r in pending)
    table = (
        "<table><tr><th>Agent</th><th>Action</th><th>Risk</th><th>Expires in</th><th></th></tr>"
        f"{rows}</table>"
        if rows
        else '<p id="empty">Nothing is waiting for approval.</p>'
    )
    out = (
        (f'<p class="msg" id="msg">{e(message)}</p>' if message else "")
        + f"<p>Signed in as <b>{e(session.user)}</b>. "
        f'<form method="post" action="/ui/logout"><input type="hidden" name="csrf" '
        f'value="{e(session.csrf)}"><button type="submit">Sign out</button></form> '
        f'<a href="/ui/approvals">Refresh</a></p>{table}'
    )
    # No automatic refresh: rows must not move under a person's pointer.
    return _page("Pending approvals", out)


async def answer(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    session = state.session(request)
    if session is None:
        return _forbidden("not signed in")
    if not _same_origin(request, state):
        return _forbidden("cross-site request refused", request)
    form = await request.post()
    if not _same_token(form.get("csrf"), session.csrf):
        return _forbidden("missing or wrong CSRF token", request)
    verb = request.match_info["verb"]
    decision_id = request.match_info["id"]
    try:
        await state.holds.answer_anywhere(decision_id, verb == "approve", session.user, "web")
    except ApprovalError as exc:
        return _page("Not answered", f"<p>{e(str(exc))}</p>", exc.status)
    done = f"{'approved' if verb == 'approve' else 'denied'} {decision_id}"
    raise web.HTTPSeeOther(f"/ui/approvals?done={done.replace(' ', '+')}")


async def link_page(request: web.Request) -> web.Response:
    state = _state(request)
    if state.links is None:
        return _forbidden("links are not enabled")
    token = request.match_info["token"]
    try:
        link = state.links.verify(token)
    except LinkError as exc:
        return _page("Link refused", f"<p>{e(str(exc))}</p>", exc.status)
    try:
        held = await state.holds.get_anywhere(link.decision_id)
    except ApprovalError as exc:
        return _page("Not available", f"<p>{e(str(exc))}</p>", exc.status)
    if held is None:
        return _page("Link refused", "<p>This request is no longer pending.</p>", 404)
    return _page(
        f"{link.verb.title()} this action?",
        f"<p>{e(held.summary)}</p><pre>{e(held.text)}</pre>"
        f"<p><small>sha256 <code>{e(held.action_hash)}</code>"
        f"</small></p><p>Answering as <b>{e(link.approver)}</b>.</p>"
        f'<form method="post"><button type="submit">{e(link.verb.title())}</button></form>',
    )


async def link_answer(request: web.Request) -> web.Response:
    state = _state(request)
    if state.links is None:
        return _forbidden("links are not enabled")
    if not _same_origin(request, state):
        return _forbidden("cross-site request refused", request)
    try:
        link = state.links.verify(request.match_info["token"])
    except LinkError as exc:
        return _page("Link refused", f"<p>{e(str(exc))}</p>", exc.status)
    state.links.consume(link)
    try:
        await state.holds.answer_anywhere(
            link.decision_id, link.verb == "approve", link.approver, "webhook"
        )
    except ApprovalError as exc:
        return _page("Not answered", f"<p>{e(str(exc))}</p>", exc.status)
    verb = "Approved" if link.verb == "approve" else "Denied"
    return _page(verb, f"<p>{verb} as {e(link.approver)}.</p>")


def add_routes(app: web.Application, state: WebApprovals) -> None:
    app[WEB_KEY] = state
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
    app.router.add_get("/ui/approvals", listing)
    app.router.add_get("/ui/approvals/link/{token}", link_page)
    app.router.add_post("/ui/approvals/link/{token}", link_answer)
    app.router.add_post("/ui/approvals/{id}/{verb:approve|deny}", answer)
