"""What a person sees before approving, attacked (red team): a hostile gateway or agent tries to
make the CLI or the console show something other than what the approval signs, or to break
the page so a real request cannot be decided."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode

from agentguard import (
    ConfigurationError,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    TransactionIntent,
)
from agentguard._approvals_cli import format_view
from agentguard._eip712 import keccak
from agentguard.network.approvals import ApprovalsClient, ApprovalView
from agentguard.network.console import _row
from agentguard.network.state import State

from .conftest import PAYEE

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
SENDER = "0x" + "aa" * 20
CLIENT = "0x" + "cc" * 20


def row_of(intent: TransactionIntent, **over: Any) -> dict[str, Any]:
    row = {
        "policy_client": CLIENT,
        "intent_hash": "0x" + intent.intent_hash.hex(),
        "intent": intent.wire(),
        "spend": {},
        "reasons": [],
        "created_at": 1_800_000_000,
        "expires_at": 1_800_000_900,
        "status": "pending",
    }
    row.update(over)
    return row


def big_transfer() -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=SENDER, token=TOKEN, recipient="0x" + "66" * 20, amount=10**12, chain_id=8453
    )


def test_terminal_escapes_in_reasons_cannot_rewrite_the_listed_amount() -> None:
    """Attack: a hostile gateway (or a policy reason quoting attacker text) puts ANSI escapes
    in a reason: cursor up, erase line, print "1 USDC to a friend". In the person's terminal
    ``agentguard approvals list`` then shows a small transfer where the signed intent moves a
    million USDC elsewhere. Before the fix the reason reached the terminal raw (the escape
    bytes were in ``format_view``'s output); now every control and bidi character is shown as
    a visible escape."""
    lie = "\x1b[1A\r\x1b[2K    1 USDC to " + PAYEE + " (transfer)\u202e\u2066"
    view = ApprovalView.from_row(row_of(big_transfer(), reasons=["ok" + lie]))
    shown = format_view(view)
    assert "1000000 USDC" in shown
    for char in ("\x1b", "\r", "\u202e", "\u2066"):
        assert char not in shown
        assert char not in _row(view, "csrf")
    assert "\\x1b[1A" in shown  # visible, not interpreted


def test_an_intent_whose_function_cannot_be_valued_says_so_and_names_the_call() -> None:
    """Attack: an agent asks for an unknown call (a router's swap, a drain function) whose
    ETH value is 0; ``approval_threshold`` sends it to a human. Before the fix the CLI and the
    page showed only "0 ETH to <contract> (unknown_call)" -- no function, no arguments -- so a
    person approved what looked like nothing. Now the amount says it cannot be valued and the
    function signature called is shown."""
    signature = "sweepTokens(address,uint256)"
    data = keccak(signature.encode())[:4] + encode(["address", "uint256"], [PAYEE, 10**30])
    intent = TransactionIntent(
        from_=SENDER, to=TOKEN, data=data, chain_id=8453, function_signature=signature
    )
    view = ApprovalView.from_row(row_of(intent))
    assert view.kind == "unknown_call"
    assert view.amount != "0 ETH" and "cannot value" in view.amount
    assert signature in format_view(view)
    assert signature in _row(view, "csrf")


@pytest.mark.parametrize(
    "times",
    [
        {"expires_at": 1 << 62},
        {"expires_at": -1},
        {"created_at": 1 << 62},
        {"expires_at": 10**30},
    ],
)
def test_a_listed_time_out_of_range_is_a_protocol_error_not_a_crash(times: dict[str, int]) -> None:
    """Attack: a hostile gateway lists an expiry in the year 10^11. Before the fix rendering it
    raised ``OSError``/``OverflowError`` from ``datetime``: the CLI died with a traceback and the
    console answered 500 for the whole page, so no request could be decided there. Now the row
    is a ``GatewayProtocolError`` (an agentguard error the CLI and console report)."""
    with pytest.raises(GatewayProtocolError):
        ApprovalView.from_row(row_of(big_transfer(), **times))


def test_one_agent_cannot_bury_another_clients_request(tmp_path: Path) -> None:
    """Attack: the agent of policy client A (within its own 1,000 live requests) parks 600
    approval requests right after client B's real one. The unfiltered listing (what the console
    and ``agentguard approvals list`` show) was the newest 500 of all clients: B's request was
    gone from both, so nobody could approve it. Now each client's newest requests are listed."""
    state = State(tmp_path / "state.db")
    now = 1_800_000_000
    victim = "0x" + "bb" * 20
    common: dict[str, Any] = {"intent": {}, "spend": {}, "reasons": [], "ttl": 900}
    assert state.park_approval(
        policy_client=victim, intent_hash="0x" + "01" * 32, now=now, **common
    )
    for n in range(600):
        parked = state.park_approval(
            policy_client=CLIENT, intent_hash=f"0x{n:064x}", now=now + 1, **common
        )
        assert parked is not None
    for status in ("pending", None):
        listed = state.approval_requests(now + 2, status=status)
        assert any(r.policy_client == victim for r in listed)


def test_a_gateway_error_cannot_write_terminal_escapes() -> None:
    """Attack: the CLI prints ``refused: <the gateway's error message>``; a hostile gateway puts
    escapes in it that erase the line and print "approved 0x..." (or retitle the terminal).
    Before the fix the message reached the terminal raw; now it is shown with visible escapes."""
    import httpx

    def gateway(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        error = {"code": -32602, "message": "\x1b[2K\rapproved\x1b]0;pwned\x07\u202e"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "error": error})

    client = ApprovalsClient("http://127.0.0.1:1", "admin", transport=httpx.MockTransport(gateway))
    with pytest.raises(GatewayRPCError) as caught:
        client.reject(CLIENT, "0x" + "11" * 32)
    assert "\\x1b[2K\\rapproved" in caught.value.message
    assert not any(c in caught.value.message for c in "\x1b\r\x07\u202e")


def test_a_form_with_too_many_fields_is_refused_as_a_page_not_a_500() -> None:
    """Attack: a local process posts a form with more fields than the parser allows. Before the
    fix ``parse_qs`` raised ``ValueError`` and the console answered a bare 500 (without its
    Content-Security-Policy and frame headers); now the form counts as empty: the sign-in page
    is answered, with the headers."""
    from coincurve import PrivateKey
    from starlette.testclient import TestClient

    from agentguard.network.console import Console, create_app

    console = Console(
        ApprovalsClient("http://127.0.0.1:1", "admin"), admin_key="admin", approver_key=PrivateKey()
    )
    form = "&".join(f"f{i}=1" for i in range(9)) + "&admin_key=admin"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    with TestClient(create_app(console), base_url="http://127.0.0.1") as browser:
        for path in ("/login", "/approve"):
            answer = browser.post(path, content=form, headers=headers, follow_redirects=False)
            assert answer.status_code in (401, 403)
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_an_approval_given_by_mistake_can_be_withdrawn_from_the_page() -> None:
    """Attack (on the person): a mis-click approves a request; until a task claims it the
    gateway accepts ``agentguard_reject`` for an approved request, but the console listed
    approved requests only as text under "Decided", with no Reject button, so the signature
    stayed usable by the agent for up to 900 s. Now an approved, unclaimed request keeps its
    Reject button."""
    import httpx
    from coincurve import PrivateKey
    from starlette.testclient import TestClient

    from agentguard.network.console import Console, create_app

    intent = big_transfer()
    row = row_of(intent, status="approved")

    def gateway(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        result = {"approvals": [row]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": result})

    client = ApprovalsClient("http://127.0.0.1:1", "admin", transport=httpx.MockTransport(gateway))
    console = Console(client, admin_key="admin", approver_key=PrivateKey())
    with TestClient(create_app(console), base_url="http://127.0.0.1") as browser:
        signed_in = browser.post(
            "/login",
            content="admin_key=admin",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert signed_in.status_code == 200
        page = browser.get("/").text
    assert f"id='reject-0x{intent.intent_hash.hex()}'" in page
    assert f"id='approve-0x{intent.intent_hash.hex()}'" not in page


def test_an_agent_cannot_grow_the_gateways_file_without_bound(tmp_path: Path) -> None:
    """Attack: within its cap of live requests, an agent parks new variations as fast as old
    ones expire (1,000 every 15 minutes: ~100,000 rows a day, for ever). Before the fix expired
    requests were never deleted, so the gateway's file and every listing grew without bound;
    now a client keeps at most as many finished requests as its cap of live ones."""
    state = State(tmp_path / "state.db")
    common: dict[str, Any] = {"intent": {}, "spend": {}, "reasons": [], "ttl": 60}
    now = 1_800_000_000
    for round_ in range(10):
        for n in range(3):
            parked = state.park_approval(
                policy_client=CLIENT,
                intent_hash=f"0x{round_:032x}{n:032x}",
                now=now + 61 * round_,
                max_pending=3,
                **common,
            )
            assert parked is not None
    assert len(state.approval_requests(now + 61 * 10)) <= 2 * 3


def test_a_claim_left_by_a_crash_does_not_block_the_intent_for_ever(tmp_path: Path) -> None:
    """Attack (or accident): the gateway dies between claiming an approval for a task and
    marking it used or giving it back (a killed process, an agent timing a request to a
    restart). Before the fix the row stayed ``approved`` with ``used_by`` set for ever: never
    expired, never rejectable, and the same intent could never be parked again, so it could
    never be approved again. Now a claim outlives its approval only by a grace period."""
    state = State(tmp_path / "state.db")
    now = 1_800_000_000
    intent_hash = "0x" + "ab" * 32
    common: dict[str, Any] = {"intent": {}, "spend": {}, "reasons": [], "ttl": 900}
    assert state.park_approval(policy_client=CLIENT, intent_hash=intent_hash, now=now, **common)
    assert state.approve(
        CLIENT, intent_hash, approval={}, approver="0x" + "01" * 20, expires_at=now + 600, now=now
    )
    assert state.claim_approval(CLIENT, intent_hash, "0x" + "77" * 32, now + 1) is not None
    # ... the gateway is killed here; it restarts much later
    later = now + 600 + 3600
    request = state.approval_request(CLIENT, intent_hash, later)
    assert request is not None and request.status == "expired"
    again = state.park_approval(policy_client=CLIENT, intent_hash=intent_hash, now=later, **common)
    assert again is not None and again.status == "pending"


def _endless_gateway(chunks: int, size: int, sent: list[int]) -> Any:
    import httpx

    def body() -> Any:
        for _ in range(chunks):
            sent.append(size)
            yield b" " * size

    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    return httpx.MockTransport(gateway)


def test_a_gateway_answer_that_never_ends_is_cut_off_by_size() -> None:
    """Attack: a hostile gateway answers ``listApprovals`` with an endless body; the CLI and the
    console read it all into memory. Before the fix every byte was read (here 96 MiB; for ever
    with a real endless body); now the admin client stops at ``MAX_ANSWER`` bytes."""
    sent: list[int] = []
    client = ApprovalsClient(
        "http://127.0.0.1:1", "admin", transport=_endless_gateway(1536, 65536, sent)
    )
    with pytest.raises(GatewayProtocolError, match="larger than"):
        client.list()
    assert sum(sent) < 1536 * 65536


def test_a_gateway_answer_that_drips_is_cut_off_by_time() -> None:
    """Attack: a hostile gateway sends its answer a byte at a time, each just inside the read
    timeout, so ``agentguard approvals list`` (and a console worker) waits for ever. Before the
    fix every chunk was awaited (here 5,000 of them, one "second" apart); now the whole answer
    must arrive within the client's timeout."""
    sent: list[int] = []
    ticks = iter(range(1_000_000))
    client = ApprovalsClient(
        "http://127.0.0.1:1",
        "admin",
        timeout=30,
        transport=_endless_gateway(5000, 1, sent),
        clock=lambda: float(next(ticks)),
    )
    with pytest.raises(GatewayUnavailable, match="within"):
        client.list()
    assert len(sent) < 100


def test_the_cli_shows_what_it_signs_and_a_person_can_decline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Attack: a prompt-injected agent relays the refusal's hint to its user: "run `agentguard
    approvals approve 0x<hash> --policy-client ...`, it is the 5 USDC you asked for" -- the hash
    being a million-USDC transfer. Before the fix ``approve`` signed without showing anything;
    now it prints the request it is about to sign and, at a terminal, asks first (declined
    here: nothing is signed or sent)."""
    import httpx

    from agentguard.cli import main as cli

    intent = big_transfer()
    intent_hash = "0x" + intent.intent_hash.hex()
    delivered: list[Any] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        if call["method"] == "agentguard_approve":
            delivered.append(call)
        result = {"approvals": [row_of(intent)]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": result})

    def client(url: str, admin_key: str, **kwargs: Any) -> ApprovalsClient:
        return ApprovalsClient(url, admin_key, transport=httpx.MockTransport(gateway))

    key = tmp_path / "approver.key"
    key.write_text("0x" + "07" * 32)
    monkeypatch.setattr("agentguard._approvals_cli.ApprovalsClient", client)
    monkeypatch.setenv("AGENTGUARD_ADMIN_KEY", "admin")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    argv = ["approvals", "approve", intent_hash, "--policy-client", CLIENT]
    argv += ["--url", "http://127.0.0.1:1", "--approver-key-file", str(key)]
    assert cli(argv) == 1
    out = capsys.readouterr().out
    assert "1000000 USDC to 0x6666666666666666666666666666666666666666" in out
    assert delivered == []


def test_the_console_signs_one_approval_per_request_while_it_lives() -> None:
    """Attack: a hostile gateway keeps listing a request as pending after the person approved
    it (or the person double-clicks). Each click signed a new approval (a new expiry, so a new
    digest the operators had not seen): the gateway collected two approvals and could have the
    same transfer allowed twice. Now the console refuses to sign a second approval for a
    request while its first one is still valid."""
    import httpx
    from coincurve import PrivateKey

    from agentguard.network.console import Console

    intent = big_transfer()
    intent_hash = "0x" + intent.intent_hash.hex()
    now = [1_800_000_000.0]
    delivered: list[Any] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        if call["method"] == "agentguard_approve":
            delivered.append(call["params"]["approval"])
        result = {"approvals": [row_of(intent)], "approver": "x"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": result})

    client = ApprovalsClient(
        "http://127.0.0.1:1",
        "admin",
        transport=httpx.MockTransport(gateway),
        clock=lambda: now[0],
    )
    console = Console(client, admin_key="admin", approver_key=PrivateKey(), clock=lambda: now[0])
    console.approve(CLIENT, intent_hash)
    now[0] += 5
    with pytest.raises(ConfigurationError, match="already approved"):
        console.approve(CLIENT, intent_hash)
    assert len(delivered) == 1
