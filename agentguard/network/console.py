"""The approval console: a small loopback web page where a person approves or rejects actions.

``python -m agentguard.network.console --state-dir DIR --gateway-url URL --port 8560``
(``ReferenceNetwork.start_console()`` starts it as its own process).

It is a separate process from the gateway on purpose: it holds the approver key and signs
approvals itself (``agentguard.network.approvals``), so the gateway never holds a key that
could approve. It calls the gateway's admin JSON-RPC with the admin key.

The page is for one person on this machine, and treats everything it shows as hostile text:

* sign-in with the admin key (a form; a session cookie that is ``HttpOnly``, ``SameSite=Strict``);
* only requests addressed to ``127.0.0.1`` or ``localhost`` are answered (DNS rebinding);
* every value from the gateway (reasons, addresses) is HTML-escaped, and a strict
  Content-Security-Policy forbids scripts altogether;
* approve and reject are POST forms carrying the session's CSRF token, checked in constant time,
  and a cross-origin ``Origin`` is refused; a GET never changes anything;
* amounts, tokens and recipients are re-derived from each intent's calldata, and a request whose
  intent does not hash to its intent hash is shown without buttons.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from coincurve import PrivateKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agentguard._exceptions import AgentGuardError, ConfigurationError
from agentguard._units import Tokens
from agentguard.network.approvals import ApprovalsClient, ApprovalView, SignedApproval

__all__ = ["Console", "create_app", "main"]

COOKIE = "agentguard_console"
SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 64
MAX_FORM = 4096
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # "no-referrer" would make browsers send Origin: null
    "cache-control": "no-store",
}
_NOTICES = {
    "approved": "Approved and signed.",
    "rejected": "Rejected.",
    "failed": "The gateway refused; see the list for the current state.",
}


class Console:
    """The console's state: the admin key, the approver key, sessions (in memory only)."""

    def __init__(
        self,
        client: ApprovalsClient,
        *,
        admin_key: str,
        approver_key: PrivateKey,
        tokens: Tokens = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._admin_key = admin_key.encode()
        self._approver_key = approver_key
        self.tokens = tokens
        self._clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}  # session id -> (csrf token, expiry)
        # (policy client, intent hash) -> until when the approval this console sent is valid
        self._sent: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:  # never shows a key
        return f"Console(gateway={self.client.url!r})"

    def sign_in(self, admin_key: str) -> str | None:
        """A new session id for the right admin key, else ``None``."""
        if not hmac.compare_digest(admin_key.encode(), self._admin_key):
            return None
        now = self._clock()
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (secrets.token_urlsafe(32), now + SESSION_SECONDS)
        return session

    def csrf(self, session: str | None) -> str | None:
        """The CSRF token of a live session."""
        held = self._sessions.get(session or "")
        if held is None or held[1] <= self._clock():
            return None
        return held[0]

    def approve(self, policy_client: str, intent_hash: str) -> None:
        """One approval per request while it is valid: a gateway that still lists an approved
        request as pending (or a double click) gets no second signature, which operators would
        take as a second, unused approval of the same action."""
        now = self._clock()
        self._sent = {k: until for k, until in self._sent.items() if until > now}
        request = (policy_client.lower(), intent_hash.lower())
        if request in self._sent:
            raise ConfigurationError(
                f"already approved {intent_hash} from this console (valid until "
                f"{_when(self._sent[request])}); if it still shows as pending, the gateway did not "
                "record it"
            )

        def record(approval: SignedApproval) -> None:
            self._sent[request] = approval.expires_at

        self.client.approve(self._approver_key, policy_client, intent_hash, before_sending=record)

    def reject(self, policy_client: str, intent_hash: str) -> None:
        self.client.reject(policy_client, intent_hash)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top}"
        ".problem{color:#a00}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _row(view: ApprovalView, csrf: str) -> str:
    e = html.escape
    reasons = "<br>".join(e(r) for r in view.reasons) or "(none given)"
    hidden = (
        f"<input type='hidden' name='csrf' value='{e(csrf)}'>"
        f"<input type='hidden' name='policy_client' value='{e(view.policy_client)}'>"
        f"<input type='hidden' name='intent_hash' value='{e(view.intent_hash)}'>"
    )
    reject = (
        f"<form method='post' action='/reject'>{hidden}"
        f"<button type='submit' id='reject-{e(view.intent_hash)}'>Reject</button></form>"
    )
    if view.status == "approved":  # until a task claims it, a mistaken approval can be withdrawn
        actions = f"approved{reject}"
    elif view.problem is not None:
        actions = f"<span class='problem'>{e(view.problem)}</span>"
    elif view.status != "pending":
        actions = e(view.status)
    else:
        actions = (
            f"<form method='post' action='/approve'>{hidden}"
            f"<button type='submit' id='approve-{e(view.intent_hash)}'>Approve</button></form>"
            + reject
        )
    return (
        f"<tr class='request' data-intent-hash='{e(view.intent_hash)}'>"
        f"<td class='amount'>{e(view.amount)}</td>"
        f"<td class='recipient'>{e(view.recipient)}</td>"
        f"<td class='reason'>{reasons}</td>"
        f"<td class='expiry'>{e(_when(view.expires_at))}</td>"
        f"<td><small>{e(view.kind)} · client {e(view.policy_client)}<br>"
        f"intent {e(view.intent_hash)}</small></td>"
        f"<td class='actions'>{actions}</td></tr>"
    )


def create_app(console: Console) -> Starlette:
    def session_of(request: Request) -> str | None:
        return request.cookies.get(COOKIE)

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is None or origin == f"http://{request.headers.get('host', '')}"

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM:
            return {}
        try:
            parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        except ValueError:  # more fields than any of our forms has
            return {}
        return {k: v[0] for k, v in parsed.items() if len(v) == 1}

    def login_page(message: str = "") -> HTMLResponse:
        note = f"<p class='problem'>{html.escape(message)}</p>" if message else ""
        return _page(
            "agentguard approvals: sign in",
            f"{note}<form method='post' action='/login'>"
            "<label>Admin key <input type='password' name='admin_key' id='admin_key' "
            "autocomplete='off'></label> <button type='submit' id='sign-in'>Sign in</button>"
            "</form>",
            status=401 if message else 200,
        )

    async def index(request: Request) -> Response:
        csrf = console.csrf(session_of(request))
        if csrf is None:
            return login_page()
        try:
            views = await run_in_threadpool(console.client.list, status=None, tokens=console.tokens)
        except AgentGuardError as exc:
            problem = f"<p class='problem'>{html.escape(exc.message)}</p>"
            return _page("agentguard approvals", problem)
        notice = _NOTICES.get(request.query_params.get("done", ""), "")
        pending = [v for v in views if v.status in ("pending", "approved")]
        rows = "".join(_row(v, csrf) for v in pending)
        table = (
            "<table id='pending'><tr><th>Amount</th><th>Recipient</th><th>Reason</th>"
            f"<th>Expires</th><th>Details</th><th></th></tr>{rows}</table>"
            if pending
            else "<p id='none'>No pending actions.</p>"
        )
        done = "".join(
            f"<li>{html.escape(v.amount)} to {html.escape(v.recipient)}: {html.escape(v.status)}"
            "</li>"
            for v in views
            if v.status not in ("pending", "approved")
        )
        return _page(
            "agentguard approvals",
            (f"<p id='notice'>{html.escape(notice)}</p>" if notice else "")
            + table
            + (f"<h2>Decided or expired</h2><ul id='decided'>{done}</ul>" if done else ""),
        )

    async def login(request: Request) -> Response:
        if not same_origin(request):
            return _page("refused", "<p>Cross-origin request refused.</p>", status=403)
        session = console.sign_in((await form(request)).get("admin_key", ""))
        if session is None:
            return login_page("That is not the admin key.")
        response = RedirectResponse("/", status_code=303, headers=_HEADERS)
        response.set_cookie(
            COOKIE, session, max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/"
        )
        return response

    def decide(action: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            fields = await form(request)
            csrf = console.csrf(session_of(request))
            token = fields.get("csrf", "")
            if (
                csrf is None
                or not same_origin(request)
                or not hmac.compare_digest(token.encode(), csrf.encode())
            ):
                return _page("refused", "<p>Sign in again; this request was refused.</p>", 403)
            method = console.approve if action == "approved" else console.reject
            try:
                await run_in_threadpool(
                    method, fields.get("policy_client", ""), fields.get("intent_hash", "")
                )
            except AgentGuardError:
                return RedirectResponse("/?done=failed", status_code=303, headers=_HEADERS)
            return RedirectResponse(f"/?done={action}", status_code=303, headers=_HEADERS)

        return handler

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        # DNS rebinding: a page from another name resolving to 127.0.0.1 would talk to us
        # under its own Host (and Origin); only loopback names are ours.
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])],
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/approve", decide("approved"), methods=["POST"]),
            Route("/reject", decide("rejected"), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from agentguard.network._cli import ADMIN_KEY_ENV
    from agentguard.network._keys import load_operator_key
    from agentguard.network.approvals import parse_token_option
    from agentguard.network.config import DEFAULT_CHAIN_IDS

    parser = argparse.ArgumentParser(
        prog="python -m agentguard.network.console", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--state-dir", required=True, help="holds secrets.json and keys/")
    parser.add_argument("--gateway-url", required=True)
    parser.add_argument("--port", type=int, default=8560)
    parser.add_argument("--approver-key-file", help="default: <state dir>/keys/owner.key")
    parser.add_argument("--token", action="append", default=[], help="SYMBOL=ADDRESS:DECIMALS")
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    try:
        admin_key = os.environ.get(ADMIN_KEY_ENV, "")
        if not admin_key:
            admin_key = json.loads((state_dir / "secrets.json").read_text())["admin_key"]
        key = load_operator_key(args.approver_key_file or str(state_dir / "keys" / "owner.key"), "")
        tokens = [t for text in args.token for t in parse_token_option(text, DEFAULT_CHAIN_IDS)]
    except (AgentGuardError, OSError, ValueError, KeyError) as exc:
        print(f"console: {exc}", file=sys.stderr)
        return 2
    console = Console(
        ApprovalsClient(args.gateway_url, admin_key),
        admin_key=admin_key,
        approver_key=key,
        tokens=tokens,
    )
    print(f"approval console on http://127.0.0.1:{args.port}/", flush=True)
    uvicorn.run(
        create_app(console),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
