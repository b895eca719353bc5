from __future__ import annotations

import logging

import pytest

from agentguard import NewtonGateway, Signer, configure_logging
from agentguard._logging import get_logger
from agentguard._redact import MASK, redact

KEY = "0x" + "5e" * 32
API_KEY = "ag_live_0123456789abcdef"


def test_redaction_chain_masks_keys_tokens_and_registered_secrets():
    Signer.from_key(KEY)
    NewtonGateway("http://127.0.0.1:1", policy_client="0x" + "00" * 20, api_key=API_KEY)
    record = {
        "private_key": "anything",
        "nested": [{"Authorization": "Bearer abc"}, {"note": f"key is {KEY[2:].upper()}"}],
        "header": "authorization: Bearer sk-123456789",
        "message": f"api key {API_KEY} leaked",
        "amount": 5,
    }
    out = redact(record)
    text = repr(out)
    assert out["private_key"] == MASK
    assert out["nested"][0]["Authorization"] == MASK
    assert KEY[2:] not in text.lower() and API_KEY not in text and "sk-123456789" not in text
    assert out["amount"] == 5


def test_library_is_quiet_until_configured_and_then_redacts(capsys):
    log = get_logger("agentguard.test")
    Signer.from_key(KEY)
    log.warning("event", secret=KEY, detail=f"key={KEY}")
    assert capsys.readouterr().err == ""
    configure_logging("DEBUG")
    try:
        log.warning("event", secret=KEY, detail=f"key={KEY}", amount=7)
        err = capsys.readouterr().err
    finally:
        logging.getLogger("agentguard").handlers.clear()
    assert "event" in err and "amount=7" in err
    assert KEY[2:] not in err.lower()


def test_every_part_of_a_node_url_that_can_hold_a_key_is_registered():
    """A transport error quotes the URL's path alone (``Max retries exceeded with url:
    /v2/<key>``): registering the whole URL, as before, masked none of these."""
    from agentguard._redact import register_url_secrets

    register_url_secrets(
        "https://rpcuser:pa55word-xyz@base.example/v2/pathkey_0a1b2c3d4e?apikey=querykey_5f6a7b"
    )
    register_url_secrets("not a url [::")  # ignored, never raises
    register_url_secrets(None)
    said = redact(
        "HTTPSConnectionPool(host='base.example'): Max retries exceeded with url: "
        "/v2/PATHKEY_0a1b2c3d4e?apikey=querykey_5f6a7b; auth pa55word-xyz"
    )
    assert "pathkey_0a1b2c3d4e" not in said.lower()
    assert "querykey_5f6a7b" not in said and "pa55word-xyz" not in said
    assert "base.example" in said  # the host is kept: it says which node failed


def test_a_plain_network_name_in_a_node_url_is_not_taken_for_a_key():
    """dRPC's URL names the network in its query (``network=base-sepolia&dkey=<key>``):
    registering every value masked each later ``base-sepolia`` (an x402 v1 network name) in
    logs and audit records. A plain lower-case name is kept unless its parameter names a key."""
    from agentguard._redact import register_url_secrets

    register_url_secrets(
        "https://lb.drpc.org/ogrpc/base-mainnet-archive?network=base-sepolia"
        "&dkey=Ak9xQ2wE7rT5yU1iO3pL&apikey=onlylowercaseletters"
    )
    said = redact(
        "paid on base-sepolia via base-mainnet-archive; "
        "dkey=Ak9xQ2wE7rT5yU1iO3pL apikey=onlylowercaseletters"
    )
    assert "base-sepolia" in said and "base-mainnet-archive" in said
    assert "Ak9xQ2wE7rT5yU1iO3pL" not in said
    assert "onlylowercaseletters" not in said  # its parameter says it is a key


def test_an_agentguard_error_never_carries_a_registered_secret():
    """Every message and text attribute of an agentguard error is redacted when it is made,
    whatever a server put in it (a ``reason``, ``reasons``, a JSON-RPC ``data``)."""
    from agentguard import GatewayRPCError, PolicyDenied, TransactionReverted
    from agentguard._redact import register_secret

    secret = "echoed_secret_77aa88bb"
    register_secret(secret)
    errors = [
        GatewayRPCError(f"bad token {secret}", code=-32000, data={"echo": [secret]}),
        PolicyDenied("denied", reasons=[f"because {secret}"]),
        TransactionReverted("reverts", reason=f"revert {secret}"),
    ]
    for error in errors:
        shown = f"{error} {error!r} {vars(error)}"
        assert secret not in shown and MASK in shown
    assert errors[0].code == -32000 and errors[0].data == {"echo": [MASK]}


def test_a_registered_key_is_masked_wherever_its_text_is_and_test_keys_are_no_abi_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not over-masking: a key registered is cut out of any text, an ABI word included, and a
    key that is a small number *is* that number's word. So test keys are hashes (``tests/keys``):
    a signer made from ``f"0x{8:064x}"`` masked every later test's string length 8."""
    from agentguard import _redact
    from agentguard._redact import register_secret
    from tests.keys import numbered_key

    monkeypatch.setattr(_redact, "_known", set())
    calldata = "0x866531ea" + f"{32:064x}" + f"{8:064x}" + "7b226964223a377d" + "0" * 48
    assert redact({"data": calldata}) == {"data": calldata}
    register_secret(bytes.fromhex(f"{8:064x}"))  # what Signer.from_key(f"0x{8:064x}") registers
    assert redact({"data": calldata})["data"] == calldata.replace(f"{8:064x}", MASK)
    for domain in ("wallet client", "budget owner", "reliability client"):
        keys = [numbered_key(n, domain) for n in range(3000)]
        assert len(set(keys)) == len(keys)
        assert all(int(k, 16) >> 192 for k in keys)  # none a small number's or an address's word
