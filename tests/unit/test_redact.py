from __future__ import annotations

import logging

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
