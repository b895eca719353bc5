"""The approval console in headless Chromium (Debian's chromium + chromedriver, selenium 4):
a person signs in with the admin key, sees the pending action, clicks Approve, and the waiting
agent's transfer lands. Plus what an attacker tries against the page."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from agentguard import TransactionIntent
from agentguard.network.launcher import ReferenceNetwork

from .conftest import AGENT, PAYEE, USDC, Chain, balance, make_wallet, new_client
from .test_wait import in_thread, wait_for_pending

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


@pytest.fixture(scope="module")
def console(network: ReferenceNetwork, chain: Chain) -> str:
    return network.start_console(tokens=[f"USDC={chain.token.address}:6"])


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser: webdriver.Chrome, console: str, admin_key: str) -> None:
    browser.get(console + "/")
    if browser.find_elements(By.ID, "admin_key"):
        browser.find_element(By.ID, "admin_key").send_keys(admin_key)
        browser.find_element(By.ID, "sign-in").click()
        WebDriverWait(browser, 60).until(lambda d: not d.find_elements(By.ID, "admin_key"))


def row_for(browser: webdriver.Chrome, console: str, intent_hash: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        browser.get(console + "/")
        rows = browser.find_elements(By.CSS_SELECTOR, f"tr[data-intent-hash='{intent_hash}']")
        if rows:
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"{intent_hash} never appeared on the page")


def test_a_click_approves_and_the_waiting_agent_completes(
    chain: Chain, network: ReferenceNetwork, console: str, browser: webdriver.Chrome
) -> None:
    client = new_client(network, chain)
    wallet = make_wallet(chain, network, client)
    before = balance(chain, PAYEE)
    thread, out = in_thread(
        lambda: wallet.transfer(PAYEE, 10 * USDC, asset=chain.token.address, approval_timeout=90)
    )
    intent_hash = wait_for_pending(network, client).intent_hash
    sign_in(browser, console, network.admin_key)
    row = row_for(browser, console, intent_hash)
    assert row.find_element(By.CLASS_NAME, "amount").text == "10 USDC"
    assert row.find_element(By.CLASS_NAME, "recipient").text.lower() == PAYEE.lower()
    assert "approval threshold" in row.find_element(By.CLASS_NAME, "reason").text
    assert "UTC" in row.find_element(By.CLASS_NAME, "expiry").text
    browser.find_element(By.ID, f"approve-{intent_hash}").click()
    notice = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "notice"))
    assert "Approved" in notice[0].text
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert balance(chain, PAYEE) - before == 10 * USDC


def park_hostile_row(network: ReferenceNetwork, chain: Chain, client: str) -> str:
    """What a lying gateway can put in front of the person: its own reasons text."""
    intent = TransactionIntent.erc20_transfer(
        sender=AGENT.address,
        token=chain.token.address,
        recipient=PAYEE,
        amount=6 * USDC,
        chain_id=8453,
    )
    intent_hash = "0x" + intent.intent_hash.hex()
    now = int(time.time())
    with contextlib.closing(
        sqlite3.connect(network.state_dir / "state.sqlite3", isolation_level=None)
    ) as db:
        db.execute(
            "INSERT OR REPLACE INTO approval_requests (policy_client, intent_hash, intent, spend, "
            "reasons, created_at, expires_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
            (
                client.lower(),
                intent_hash,
                json.dumps(intent.wire()),
                json.dumps({"recipient": XSS}),
                json.dumps([XSS]),
                now,
                now + 600,
            ),
        )
    return intent_hash


def test_attacker_text_is_shown_as_text(
    chain: Chain, network: ReferenceNetwork, console: str, browser: webdriver.Chrome
) -> None:
    """Attack: script in a reason (and in the gateway's own spend.recipient, which the page
    never uses: the recipient comes from the calldata). Shown as text, never run."""
    client = new_client(network, chain)
    intent_hash = park_hostile_row(network, chain, client)
    sign_in(browser, console, network.admin_key)
    row = row_for(browser, console, intent_hash)
    assert row.find_element(By.CLASS_NAME, "reason").text == XSS
    assert row.find_element(By.CLASS_NAME, "recipient").text.lower() == PAYEE.lower()
    assert browser.execute_script("return window.__xss === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.request img")


def csrf_of(page: str) -> str:
    match = re.search(r"name='csrf' value='([^']+)'", page)
    assert match is not None
    return match.group(1)


def test_csrf_and_get_requests_change_nothing(
    chain: Chain, network: ReferenceNetwork, console: str
) -> None:
    """Attack: a page elsewhere makes the person's browser approve (CSRF): a GET link, a POST
    without the session or without the token, a cross-origin POST with both. Also: the
    wrong admin key does not sign in."""
    client = new_client(network, chain)
    intent_hash = park_hostile_row(network, chain, client)
    form = {"policy_client": client, "intent_hash": intent_hash}
    with httpx.Client(base_url=console, follow_redirects=False) as http:
        assert http.post("/login", data={"admin_key": network.api_key}).status_code == 401
        query = "&".join(f"{k}={v}" for k, v in form.items())
        assert http.get(f"/approve?{query}").status_code == 405
        assert http.post("/approve", data=form).status_code == 403  # no session
        assert http.post("/login", data={"admin_key": network.admin_key}).status_code == 303
        cookie = http.cookies.get("agentguard_console")
        assert cookie
        csrf = csrf_of(http.get("/").text)
        assert http.post("/approve", data=form).status_code == 403  # no token
        assert http.post("/approve", data={**form, "csrf": "x" * 43}).status_code == 403
        cross = http.post(
            "/approve", data={**form, "csrf": csrf}, headers={"origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        page = http.get("/")
        assert "script-src" not in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    with httpx.Client(base_url=console, follow_redirects=False) as other:  # no cookie, token
        assert other.post("/approve", data={**form, "csrf": csrf}).status_code == 403
    with contextlib.closing(network.approvals()) as approvals:
        assert approvals.find(client, intent_hash).status == "pending"


def test_a_rebound_host_name_is_refused(network: ReferenceNetwork, console: str) -> None:
    """Attack: DNS rebinding. A page on evil.example re-resolves its name to 127.0.0.1 and
    talks to the console as its own origin (Host and Origin agree, so an Origin check alone
    passes); the console answers only to loopback names."""
    port = console.rsplit(":", 1)[1]
    with httpx.Client(base_url=console, follow_redirects=False) as http:
        headers = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"}
        answer = http.post("/login", data={"admin_key": network.admin_key}, headers=headers)
        assert answer.status_code == 400 and "agentguard_console" not in answer.cookies
        assert http.get("/", headers=headers).status_code == 400


def test_the_console_keeps_its_keys_out_of_argv_and_logs(
    network: ReferenceNetwork, console: str
) -> None:
    """The console holds the approver and admin keys (read from 0600 files): neither appears
    in its command line, its log or its answers; the gateway's command line and environment
    carry no approver key either."""
    approver = network.approver_key_file.read_text().strip().removeprefix("0x")
    secrets = [approver, network.admin_key, network.api_key]
    assert network._console is not None and network._gateway is not None
    for process in (network._console, network._gateway):
        for part in ("cmdline", "environ"):
            text = Path(f"/proc/{process.pid}/{part}").read_bytes().decode("utf-8", "replace")
            assert not any(s in text for s in secrets), part
    log = (network.state_dir / "logs" / "console.log").read_text()
    assert not any(s in log for s in secrets)
    with httpx.Client(base_url=console) as http:
        http.post("/login", data={"admin_key": network.admin_key})
        assert not any(s in http.get("/").text for s in secrets)
