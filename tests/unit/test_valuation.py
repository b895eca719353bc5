"""Spend is judged from what the calldata does (``agentguard._value``), never from a name.

Before issue 7, ``TransactionIntent.spend`` recognised only the strings ``transfer``,
``approve`` and ``transferFrom``; every other function (and a brute-forced name carrying
approve's selector) was valued at its ETH ``value``, 0, and passed caps-only policies.
Each table entry is checked here for its valuation and, end to end, against the bundled
caps-only ``agent_spend`` policy through the real Rego engine.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import IntentError, TransactionIntent
from agentguard._attestation import operator_address
from agentguard._eip712 import keccak
from agentguard._intent import argument_types
from agentguard._value import KNOWN_SELECTORS, NATIVE_ASSET, UINT256_MAX, check_signature
from agentguard.network._rpc import RPCError
from agentguard.network.operator import Operator
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import policy_material
from agentguard.policies import load
from agentguard.policies._testkit import evaluate, wasm_for
from tests.task_ids import bind

AGENT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
OWNER = "0x5555555555555555555555555555555555555555"
THIEF = "0x6666666666666666666666666666666666666666"
OTHER = "0x7777777777777777777777777777777777777777"
AMOUNT = 10**9  # 1,000 USDC
FAR = 2**40
SIG = b"\x01" * 65
R, S = b"\x11" * 32, b"\x22" * 32
U160_MAX = (1 << 160) - 1

# The attacker's policy: caps and a contract allowlist only (issue 7, finding 1).
CAPS: dict[str, Any] = {
    "max_per_tx": {TOKEN.lower(): "1000000", NATIVE_ASSET: "10000000000000000"},
    "window_caps": [{"asset": TOKEN.lower(), "window_seconds": 86400, "max_amount": "5000000"}],
    "allowed_contracts": [TOKEN, PERMIT2],
}


def call(signature: str, args: list[Any], *, to: str = TOKEN, value: int = 0) -> TransactionIntent:
    data = keccak(signature.encode())[:4] + abi_encode(argument_types(signature), args)
    return TransactionIntent(
        from_=AGENT, to=to, value=value, data=data, chain_id=8453, function_signature=signature
    )


_SIG_TRANSFER = "((address,uint256),uint256,uint256),(address,uint256),address"
_SIG_BATCH = "((address,uint256)[],uint256,uint256),(address,uint256)[],address"

# signature → (contract called, arguments, expected (kind, asset, amount, recipient))
CASES: dict[str, tuple[str, list[Any], tuple[str, str, int, str]]] = {
    "transfer(address,uint256)": (TOKEN, [THIEF, AMOUNT], ("transfer", TOKEN, AMOUNT, THIEF)),
    "transferFrom(address,address,uint256)": (
        TOKEN, [OWNER, THIEF, AMOUNT], ("transfer", TOKEN, AMOUNT, THIEF)
    ),
    "approve(address,uint256)": (
        TOKEN, [THIEF, UINT256_MAX], ("approval", TOKEN, UINT256_MAX, THIEF)
    ),
    "increaseAllowance(address,uint256)": (
        TOKEN, [THIEF, AMOUNT], ("approval", TOKEN, AMOUNT, THIEF)
    ),
    "burn(uint256)": (TOKEN, [AMOUNT], ("transfer", TOKEN, AMOUNT, NATIVE_ASSET)),
    "burnFrom(address,uint256)": (TOKEN, [OWNER, AMOUNT], ("transfer", TOKEN, AMOUNT, NATIVE_ASSET)),
    "burn(uint256,bytes)": (TOKEN, [AMOUNT, b""], ("transfer", TOKEN, AMOUNT, NATIVE_ASSET)),
    "transferAndCall(address,uint256)": (TOKEN, [THIEF, AMOUNT], ("transfer", TOKEN, AMOUNT, THIEF)),
    "transferAndCall(address,uint256,bytes)": (
        TOKEN, [THIEF, AMOUNT, b"x"], ("transfer", TOKEN, AMOUNT, THIEF)
    ),
    "transferFromAndCall(address,address,uint256)": (
        TOKEN, [OWNER, THIEF, AMOUNT], ("transfer", TOKEN, AMOUNT, THIEF)
    ),
    "transferFromAndCall(address,address,uint256,bytes)": (
        TOKEN, [OWNER, THIEF, AMOUNT, b"x"], ("transfer", TOKEN, AMOUNT, THIEF)
    ),
    "approveAndCall(address,uint256)": (TOKEN, [THIEF, AMOUNT], ("approval", TOKEN, AMOUNT, THIEF)),
    "approveAndCall(address,uint256,bytes)": (
        TOKEN, [THIEF, AMOUNT, b"x"], ("approval", TOKEN, AMOUNT, THIEF)
    ),
    "send(address,uint256,bytes)": (TOKEN, [THIEF, AMOUNT, b""], ("transfer", TOKEN, AMOUNT, THIEF)),
    "operatorSend(address,address,uint256,bytes,bytes)": (
        TOKEN, [OWNER, THIEF, AMOUNT, b"", b""], ("transfer", TOKEN, AMOUNT, THIEF)
    ),
    "authorizeOperator(address)": (TOKEN, [THIEF], ("approval", TOKEN, UINT256_MAX, THIEF)),
    "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)": (
        TOKEN, [OWNER, THIEF, AMOUNT, FAR, 27, R, S], ("approval", TOKEN, AMOUNT, THIEF)
    ),
    "permit(address,address,uint256,uint256,bytes)": (
        TOKEN, [OWNER, THIEF, AMOUNT, FAR, SIG], ("approval", TOKEN, AMOUNT, THIEF)
    ),
    "permit(address,address,uint256,uint256,bool,uint8,bytes32,bytes32)": (
        TOKEN, [OWNER, THIEF, 0, FAR, True, 27, R, S], ("approval", TOKEN, UINT256_MAX, THIEF)
    ),
    **{
        f"{name}(address,address,uint256,uint256,uint256,bytes32,{tail})": (
            TOKEN, [OWNER, THIEF, AMOUNT, 0, FAR, R, *rest], ("transfer", TOKEN, AMOUNT, THIEF)
        )
        for name in ("transferWithAuthorization", "receiveWithAuthorization")
        for tail, rest in (("uint8,bytes32,bytes32", [27, R, S]), ("bytes", [SIG]))
    },
    "safeTransferFrom(address,address,uint256)": (
        TOKEN, [OWNER, THIEF, 1], ("nft", TOKEN, UINT256_MAX, THIEF)
    ),
    "safeTransferFrom(address,address,uint256,bytes)": (
        TOKEN, [OWNER, THIEF, 1, b""], ("nft", TOKEN, UINT256_MAX, THIEF)
    ),
    "safeTransferFrom(address,address,uint256,uint256,bytes)": (
        TOKEN, [OWNER, THIEF, 1, 1, b""], ("nft", TOKEN, UINT256_MAX, THIEF)
    ),
    "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)": (
        TOKEN, [OWNER, THIEF, [1, 2], [1, 1], b""], ("nft", TOKEN, UINT256_MAX, THIEF)
    ),
    "setApprovalForAll(address,bool)": (TOKEN, [THIEF, True], ("nft", TOKEN, UINT256_MAX, THIEF)),
    "approve(address,address,uint160,uint48)": (
        PERMIT2, [TOKEN, THIEF, U160_MAX, FAR], ("approval", TOKEN, UINT256_MAX, THIEF)
    ),
    "permit(address,((address,uint160,uint48,uint48),address,uint256),bytes)": (
        PERMIT2,
        [OWNER, ((TOKEN, AMOUNT, FAR, 0), THIEF, FAR), SIG],
        ("approval", TOKEN, AMOUNT, THIEF),
    ),
    "permit(address,((address,uint160,uint48,uint48)[],address,uint256),bytes)": (
        PERMIT2,
        [OWNER, ([(TOKEN, AMOUNT, FAR, 0), (TOKEN, U160_MAX, FAR, 0)], THIEF, FAR), SIG],
        ("approval", TOKEN, UINT256_MAX, THIEF),
    ),
    "transferFrom(address,address,uint160,address)": (
        PERMIT2, [OWNER, THIEF, AMOUNT, TOKEN], ("transfer", TOKEN, AMOUNT, THIEF)
    ),
    "transferFrom((address,address,uint160,address)[])": (
        PERMIT2,
        [[(OWNER, THIEF, AMOUNT, TOKEN), (AGENT, THIEF, AMOUNT, TOKEN)]],
        ("transfer", TOKEN, 2 * AMOUNT, THIEF),
    ),
    f"permitTransferFrom({_SIG_TRANSFER},bytes)": (
        PERMIT2,
        [((TOKEN, AMOUNT), 0, FAR), (THIEF, AMOUNT), OWNER, SIG],
        ("transfer", TOKEN, AMOUNT, THIEF),
    ),
    f"permitWitnessTransferFrom({_SIG_TRANSFER},bytes32,string,bytes)": (
        PERMIT2,
        [((TOKEN, AMOUNT), 0, FAR), (THIEF, AMOUNT), OWNER, R, "W(uint256 x)", SIG],
        ("transfer", TOKEN, AMOUNT, THIEF),
    ),
    f"permitTransferFrom({_SIG_BATCH},bytes)": (
        PERMIT2,
        [([(TOKEN, AMOUNT)], 0, FAR), [(THIEF, AMOUNT)], OWNER, SIG],
        ("transfer", TOKEN, AMOUNT, THIEF),
    ),
    f"permitWitnessTransferFrom({_SIG_BATCH},bytes32,string,bytes)": (
        PERMIT2,
        [([(TOKEN, AMOUNT)], 0, FAR), [(THIEF, AMOUNT)], OWNER, R, "W(uint256 x)", SIG],
        ("transfer", TOKEN, AMOUNT, THIEF),
    ),
}  # fmt: skip
# Revocations move nothing; they are valued at 0 (of the token, as its kind says).
REVOCATIONS = {
    "decreaseAllowance(address,uint256)": [THIEF, AMOUNT],
    "setApprovalForAll(address,bool)": [THIEF, False],
    "permit(address,address,uint256,uint256,bool,uint8,bytes32,bytes32)": [
        OWNER, THIEF, 0, FAR, False, 27, R, S,
    ],
}  # fmt: skip


def test_every_table_entry_has_a_case() -> None:
    """A selector added to the table without a test here fails this test."""
    table = {entry.signature for entry in KNOWN_SELECTORS.values()}
    assert table == set(CASES) | {"decreaseAllowance(address,uint256)"}


@pytest.mark.parametrize("signature", sorted(CASES))
def test_each_value_moving_function_is_valued_from_its_calldata(signature: str) -> None:
    to, args, (kind, asset, amount, recipient) = CASES[signature]
    spend = call(signature, args, to=to).spend
    assert (spend.kind, spend.asset, spend.amount, spend.recipient) == (
        kind,
        asset,
        amount,
        recipient,
    )
    assert spend.amount > 0


@pytest.mark.parametrize("signature", sorted(CASES))
def test_caps_only_policy_never_sees_a_value_moving_call_as_zero(signature: str) -> None:
    """Before the fix, every entry but transfer/approve/transferFrom passed these caps."""
    to, args, _ = CASES[signature]
    intent = call(signature, args, to=to)
    wasm = wasm_for(intent)
    assert wasm["spend"]["amount"] != "0"
    for policy in ("agent_spend", "tx_cap", "window_cap"):
        result = evaluate(policy, intent, CAPS if policy == "agent_spend" else _only(CAPS, policy))
        assert result.decision == "deny", (policy, result.reasons)
        assert any("cap" in reason for reason in result.reasons)


def _only(params: dict[str, Any], policy: str) -> dict[str, Any]:
    key = {"tx_cap": "max_per_tx", "window_cap": "window_caps"}[policy]
    return {key: params[key]}


@pytest.mark.parametrize("signature", sorted(REVOCATIONS))
def test_revocations_are_valued_at_zero(signature: str) -> None:
    spend = call(signature, REVOCATIONS[signature]).spend
    assert (spend.asset, spend.amount, spend.recipient) == (TOKEN, 0, THIEF)
    assert evaluate("agent_spend", call(signature, REVOCATIONS[signature]), CAPS).decision == (
        "allow"
    )


def test_the_brute_forced_approve_name_is_refused() -> None:
    """The attack of issue 7: ``payb_9uByHa(address,uint256)`` has approve's selector."""
    assert keccak(b"payb_9uByHa(address,uint256)")[:4].hex() == "095ea7b3"
    with pytest.raises(IntentError, match=r"selector of 'approve\(address,uint256\)'"):
        call("payb_9uByHa(address,uint256)", [THIEF, UINT256_MAX])
    with pytest.raises(IntentError, match="approve"):
        check_signature("payb_9uByHa(address,uint256)")
    real = call("approve(address,uint256)", [THIEF, UINT256_MAX])
    wire = dict(real.wire())
    wire["function_signature"] = "0x" + b"payb_9uByHa(address,uint256)".hex()
    with pytest.raises(IntentError, match="selector"):  # what every operator parses
        TransactionIntent.from_wire(wire)


def test_unlimited_approval_reaches_the_policy_as_uint256_max() -> None:
    intent = call("approve(address,uint256)", [THIEF, UINT256_MAX])
    result = evaluate("agent_spend", intent, CAPS)
    assert result.decision == "deny"
    assert f"amount {UINT256_MAX} of asset {TOKEN.lower()} is above" in " ".join(result.reasons)
    assert wasm_for(intent)["spend"] == {
        "asset": TOKEN.lower(),
        "amount": str(UINT256_MAX),
        "recipient": THIEF.lower(),
        "kind": "approval",
    }


def test_nft_actions_pass_only_a_policy_that_caps_the_collection_at_the_maximum() -> None:
    intent = call("safeTransferFrom(address,address,uint256)", [AGENT, OTHER, 7], to=OTHER)
    assert evaluate("tx_cap", intent, {"max_per_tx": {"*": str(10**30)}}).decision == "deny"
    explicit = {"max_per_tx": {OTHER.lower(): str(UINT256_MAX)}}
    assert evaluate("tx_cap", intent, explicit).decision == "allow"


def test_a_zero_token_action_on_an_uncapped_contract_is_denied() -> None:
    """ERC-721 ``transferFrom(vault, thief, 0)`` shares ERC-20's selector and reads as amount
    0; before the fix an asset without a cap entry passed any zero amount."""
    nft_id_zero = call("transferFrom(address,address,uint256)", [AGENT, THIEF, 0], to=OTHER)
    result = evaluate("tx_cap", nft_id_zero, _only(CAPS, "tx_cap"))
    assert result.decision == "deny"
    assert "has no entry in max_per_tx" in result.reasons[0]


def test_unknown_call_counts_its_eth_and_is_marked_unknown() -> None:
    intent = call("stake(uint256)", [AMOUNT], value=5)
    spend = intent.spend
    assert (spend.kind, spend.asset, spend.amount, spend.recipient) == (
        "unknown_call",
        NATIVE_ASSET,
        5,
        TOKEN,
    )
    for policy in ("tx_cap", "window_cap"):
        result = evaluate(policy, intent, _only(CAPS, policy))
        assert result.decision == "deny"
        assert any("stake(uint256)" in reason for reason in result.reasons)
    allowed = {**_only(CAPS, "tx_cap"), "allowed_functions": ["stake(uint256)"]}
    assert evaluate("tx_cap", intent, allowed).decision == "allow"
    # listed, its ETH value is still capped
    big = call("stake(uint256)", [AMOUNT], value=10**16 + 1)
    assert evaluate("tx_cap", big, allowed).decision == "deny"


def test_a_token_call_that_also_sends_eth_is_refused() -> None:
    with pytest.raises(IntentError, match="also sends 1 wei"):
        call("transfer(address,uint256)", [THIEF, AMOUNT], value=1)


@pytest.mark.parametrize(
    ("signature", "args"),
    [
        (
            "transferFrom((address,address,uint160,address)[])",
            [[(AGENT, THIEF, 1, TOKEN), (AGENT, THIEF, 1, OTHER)]],
        ),
        (
            "transferFrom((address,address,uint160,address)[])",
            [[(AGENT, THIEF, 1, TOKEN), (AGENT, OTHER, 1, TOKEN)]],
        ),
        ("transferFrom((address,address,uint160,address)[])", [[]]),
        (
            f"permitTransferFrom({_SIG_BATCH},bytes)",
            [([(TOKEN, 1), (TOKEN, 1)], 0, FAR), [(THIEF, 1)], OWNER, SIG],
        ),
    ],
)
def test_calls_that_are_not_one_asset_to_one_recipient_are_refused(
    signature: str, args: list[Any]
) -> None:
    with pytest.raises(IntentError):
        call(signature, args, to=PERMIT2)


def test_calldata_that_does_not_decode_as_a_table_entry_is_refused() -> None:
    selector = keccak(b"approve(address,uint256)")[:4]
    for data in (selector, selector + b"\x00" * 40, selector + b"\xff" * 64):
        with pytest.raises(IntentError):
            TransactionIntent(
                from_=AGENT,
                to=TOKEN,
                data=data,
                chain_id=8453,
                function_signature="approve(address,uint256)",
            )


@settings(max_examples=200, deadline=None)
@given(
    signature=st.sampled_from(sorted(e.signature for e in KNOWN_SELECTORS.values())),
    tail=st.binary(max_size=400),
    value=st.integers(min_value=0, max_value=3),
)
def test_random_calldata_under_a_known_selector_is_valued_or_refused(
    signature: str, tail: bytes, value: int
) -> None:
    """Only IntentError escapes, and whatever is accepted is valued by its kind, not as ETH."""
    try:
        intent = TransactionIntent(
            from_=AGENT,
            to=TOKEN,
            value=value,
            data=keccak(signature.encode())[:4] + tail,
            chain_id=8453,
            function_signature=signature,
        )
    except IntentError:
        return
    assert value == 0
    assert intent.spend.kind in ("transfer", "approval", "nft")


def test_non_canonical_calldata_of_a_value_moving_call_is_refused() -> None:
    """Trailing bytes or re-pointed offsets could make a contract read other arguments than
    the ones valued; only the canonical encoding is accepted for table entries."""
    good = call("transfer(address,uint256)", [THIEF, AMOUNT])
    with pytest.raises(IntentError, match="canonical"):
        TransactionIntent(
            from_=AGENT,
            to=TOKEN,
            data=good.data + b"\x00" * 32,
            chain_id=8453,
            function_signature="transfer(address,uint256)",
        )
    signature = f"permitTransferFrom({_SIG_BATCH},bytes)"
    canonical = call(signature, CASES[signature][1], to=PERMIT2).data
    # point the bytes argument's offset past one extra, unused word
    head = bytearray(canonical)
    offset_at = 4 + 3 * 32
    offset = int.from_bytes(head[offset_at : offset_at + 32], "big")
    head[offset_at : offset_at + 32] = (offset + 32).to_bytes(32, "big")
    moved = bytes(head[: 4 + offset]) + b"\x00" * 32 + bytes(head[4 + offset :])
    with pytest.raises(IntentError, match="canonical"):
        TransactionIntent(
            from_=AGENT, to=PERMIT2, data=moved, chain_id=8453, function_signature=signature
        )


@pytest.mark.parametrize(
    "lie",
    [
        {"kind": "transfer", "amount": "1"},  # the approval "is" a 1-unit transfer
        {"kind": "native", "amount": "0", "asset": NATIVE_ASSET},  # the pre-fix valuation
        {"kind": "unknown_call"},
    ],
)
def test_operators_refuse_a_gateway_that_misstates_the_spend(lie: dict[str, str]) -> None:
    """A lying gateway cannot hand the policy a smaller spend: each operator re-values the
    intent it parsed from the wire and refuses any other ``data.wasm.spend``."""
    intent = call("approve(address,uint256)", [THIEF, UINT256_MAX])
    policy = load("agent_spend")
    now = int(time.time())
    wasm = wasm_for(intent, now=now)
    owner = PrivateKey(b"\x09" * 32)  # an EOA policy client registers itself
    client = operator_address(owner)
    registration = Registration.sign(
        owner, policy_client=client, policy=policy, params=CAPS, expire_after=300,
        chain_id=8453, version=1,
    )  # fmt: skip
    body: dict[str, Any] = {
        "policy_client": client,
        "registration": registration.to_json(),
        "chain_id": 8453,
        "intent": intent.wire(),
        "policy_code_hash": "0x" + policy.code_hash.hex(),
        "policy": policy_material(policy),
        "params": CAPS,
        "expire_after": 300,
        "expires_at": now + 300,
        "wasm": wasm,
    }
    bind(body)
    operator = Operator(PrivateKey(), Registry(":memory:"))
    assert operator.evaluate_and_sign(body)["decision"] == "deny"  # the truth: max, denied
    body["wasm"] = {**wasm, "spend": {**wasm["spend"], **lie}}
    with pytest.raises(RPCError, match="spend does not match"):
        operator.evaluate_and_sign(body)
