"""recipient_list through the real engine: effective recipient and called contract, any case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard._eip712 import keccak
from agentguard._intent import TransactionIntent
from agentguard.policies._testkit import (
    PAYEE,
    ROUTER,
    USDC,
    erc20,
    eth,
    evaluate,
    swap,
    unvalued,
    wasm_for,
)

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
STRANGER = "0x5555555555555555555555555555555555555555"
EXAMPLE = {
    "allowed_recipients": ["0x2222222222222222222222222222222222222222"],
    "allowed_contracts": [USDC.upper().replace("0X", "0x"), ROUTER],
}


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [{}, {"allowed_recipients": ["0x12"]}, {"denied_recipients": [PAYEE, PAYEE]}, {"x": []}],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_allows_a_listed_recipient_through_a_listed_token() -> None:
    assert evaluate("recipient_list", erc20(5), EXAMPLE).decision == "allow"


def test_addresses_compare_case_insensitively() -> None:
    checksummed = "0x2222222222222222222222222222222222222222".upper().replace("0X", "0x")
    intent = erc20(5)
    wasm = wasm_for(intent)
    wasm["spend"]["recipient"] = checksummed
    params = {"allowed_recipients": [checksummed.lower()]}
    assert evaluate("recipient_list", intent, params, wasm).decision == "allow"


def test_denies_a_recipient_outside_the_allowlist() -> None:
    result = evaluate("recipient_list", erc20(5, recipient=STRANGER), EXAMPLE)
    assert result.decision == "deny"
    assert result.reasons == (f"recipient {STRANGER} is not in allowed_recipients",)


def test_denies_a_denied_recipient_of_plain_eth() -> None:
    result = evaluate("recipient_list", eth(1, to=STRANGER), {"denied_recipients": [STRANGER]})
    assert result.reasons == (f"recipient {STRANGER} is in denied_recipients",)


def test_denies_a_call_to_an_unlisted_contract() -> None:
    other = "0x6666666666666666666666666666666666666666"
    result = evaluate("recipient_list", swap(to=other), {"allowed_contracts": [ROUTER]})
    assert result.reasons == (f"contract {other} is not in allowed_contracts",)


def test_denies_a_call_to_a_denied_contract() -> None:
    result = evaluate("recipient_list", swap(), {"denied_contracts": [ROUTER]})
    assert result.reasons == (f"contract {ROUTER} is in denied_contracts",)


def test_contract_lists_do_not_apply_to_plain_transfers() -> None:
    assert evaluate("recipient_list", eth(1), {"denied_contracts": [PAYEE]}).decision == "allow"


def test_a_call_of_nothing_to_an_unlisted_contract_is_denied() -> None:
    """Red team: 0 wei without calldata passed every cap (it moves nothing) and, being no
    contract call, allowed_contracts too, while it runs any contract's receive/fallback code
    as the wallet."""
    other = "0x" + "9" * 40
    result = evaluate("recipient_list", eth(0, to=other), {"allowed_contracts": [ROUTER]})
    assert result.reasons == (f"contract {other} is not in allowed_contracts",)
    assert (
        evaluate("recipient_list", eth(0, to=ROUTER), {"allowed_contracts": [ROUTER]}).decision
        == "allow"
    )
    assert (
        evaluate("recipient_list", eth(1, to=other), {"allowed_contracts": [ROUTER]}).decision
        == "allow"
    )


def test_missing_recipient_is_denied() -> None:
    intent = erc20(5)
    wasm = wasm_for(intent)
    del wasm["spend"]["recipient"]
    assert evaluate("recipient_list", intent, EXAMPLE, wasm).reasons == (
        "the gateway sent no spend recipient (data.wasm.spend.recipient); denied",
    )


def test_without_lists_nothing_is_allowed() -> None:
    assert evaluate("recipient_list", erc20(5), {}, check_schema=False).reasons == (
        "recipient_list: params has no recipient or contract list, so nothing is allowed",
    )


def test_an_unvalued_call_has_no_known_recipient_and_is_denied_unless_listed() -> None:
    params = {"allowed_recipients": [PAYEE, ROUTER]}
    result = evaluate("recipient_list", swap(), params)
    assert (result.decision, result.reasons) == ("deny", (unvalued(swap()),))
    listed = {**params, "allowed_functions": ["deposit()"]}
    assert evaluate("recipient_list", swap(), listed).decision == "allow"
    # a contract list alone is an explicit choice of what may be called
    assert evaluate("recipient_list", swap(), {"allowed_contracts": [ROUTER]}).decision == "allow"


def test_the_spender_of_an_approval_is_its_recipient() -> None:
    data = keccak(b"approve(address,uint256)")[:4] + bytes(12) + bytes.fromhex(STRANGER[2:])
    approve = TransactionIntent.model_validate(
        {"from": PAYEE, "to": USDC, "data": data + (1).to_bytes(32, "big"), "chain_id": 8453,
         "function_signature": "approve(address,uint256)"}
    )  # fmt: skip
    result = evaluate("recipient_list", approve, {"allowed_recipients": [PAYEE]})
    assert result.reasons == (f"recipient {STRANGER} is not in allowed_recipients",)
