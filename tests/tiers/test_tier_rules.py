"""The tier table, the client's minimum, the engine's reading of a policy's tier and the
Verifier's checks, without processes: operators are local keys."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import (
    Attestation,
    ConfigurationError,
    InsufficientQuorum,
    OnchainCheckRequired,
    PaymentIntent,
    Signer,
    TierTooLow,
    TransactionIntent,
    UnknownOperator,
    UnknownTier,
    Verifier,
)
from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard._eip712 import address_word, bool_word, domain_separator, keccak, uint_word
from agentguard._eip712 import typed_data_digest as typed_digest
from agentguard._tiers import (
    ALL,
    HIGH,
    HUMAN,
    STANDARD,
    VAULT_ONLY,
    MinimumTiers,
    TierThresholds,
    tier_name,
)
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine

CLIENT = "0x000000000000000000000000000000000000c1E7"
AGENT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x2222222222222222222222222222222222222222"
PAYEE = "0x3333333333333333333333333333333333333333"
KEYS = [PrivateKey(keccak(f"tier operator {i}".encode())) for i in range(3)]
OPERATORS = [operator_address(k) for k in KEYS]


def transfer(amount: int) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT, token=TOKEN, recipient=PAYEE, amount=amount, chain_id=8453
    )


def attest(
    intent: TransactionIntent | PaymentIntent, *, tier: int, signers: int = 3, **digest: Any
) -> Attestation:
    task_id, policy_id, expires_at = PrivateKey().secret, b"\x02" * 32, int(time.time()) + 60
    fields = {
        "chain_id": 8453,
        "policy_client": bytes.fromhex(CLIENT[2:]),
        "task_id": task_id,
        "policy_id": policy_id,
        "intent_hash": intent.intent_hash,
        "allow": True,
        "expires_at": expires_at,
        "tier": tier,
        **digest,
    }
    signed = attestation_digest(**fields)
    return Attestation(
        decision="allow",
        task_id=task_id,
        policy_id=policy_id,
        policy_client=CLIENT,
        intent_hash=intent.intent_hash,
        expires_at=expires_at,
        tier=tier,
        signatures=tuple(
            {"operator": operator_address(k), "signature": sign_attestation(k, signed)}
            for k in KEYS[:signers]
        ),
    )


def verifier(**options: Any) -> Verifier:
    return Verifier(OPERATORS, policy_client=CLIENT, **options)


def test_the_table() -> None:
    assert [tier_name(t) for t in range(9)] == [
        "standard", "high", "all", "human",
        "standard+vault", "high+vault", "all+vault", "human+vault", "unknown(8)",
    ]  # fmt: skip
    t = TierThresholds(operators=5, threshold=4)
    assert [t.required(x) for x in range(8)] == [4, 5, 5, 5, 4, 5, 5, 5]
    assert TierThresholds(operators=5, threshold=3, high=4).required(HIGH) == 4
    for bad in (2, 6, True):
        with pytest.raises(ConfigurationError, match="high tier"):
            TierThresholds(operators=5, threshold=3, high=bad)


def test_the_client_minimum_is_judged_from_what_the_calldata_moves() -> None:
    rules = MinimumTiers.parse(
        {"high": {TOKEN: 100}, "all": {"*": "1000"}, "human": {TOKEN.upper(): 10_000},
         "vault": {TOKEN: 500}}
    )  # fmt: skip
    assert [rules.required(transfer(a).spend) for a in (100, 101, 501, 1001, 10_001)] == [
        STANDARD, HIGH, HIGH | VAULT_ONLY, ALL | VAULT_ONLY, HUMAN | VAULT_ONLY,
    ]  # fmt: skip
    # an approve of the same amount moves the same asset: judged the same, whatever its name
    approve = TransactionIntent(
        from_=AGENT,
        to=TOKEN,
        data=bytes.fromhex("095ea7b3") + bytes(12) + bytes.fromhex(PAYEE[2:])
        + (2_000).to_bytes(32, "big"),
        function_signature="approve(address,uint256)",
        chain_id=8453,
    )  # fmt: skip
    assert rules.required(approve.spend) == ALL | VAULT_ONLY
    for bad in ({"extreme": {TOKEN: 1}}, {"high": {"USDC": 1}}, {"high": {TOKEN: -1}},
                {"high": {TOKEN: "1e6"}}, {"high": {}}, ["high"]):  # fmt: skip
        with pytest.raises(ConfigurationError):
            MinimumTiers.parse(bad)


def _policy(rule: str) -> Policy:
    source = f"package t\nimport rego.v1\ndefault allow := true\n{rule}\n"
    return Policy(name="t", entrypoint="t.allow", modules={"t.rego": source}, params_schema={})


@pytest.mark.parametrize(
    ("rule", "decision", "tier"),
    [
        ("", "allow", 0),
        ("tier := 2", "allow", 2),
        ("tier := 7", "allow", 7),
        ("tier := 8", "deny", 0),
        ('tier := "high"', "deny", 0),
        ("tier := 1.5", "deny", 0),
        ("tier := -1", "deny", 0),
    ],
)
def test_the_engine_reads_a_policy_tier_and_denies_an_unknown_one(
    rule: str, decision: str, tier: int
) -> None:
    """A tier nobody can enforce must not turn into a weaker one (the operator would sign a
    tier the verifier and vault read differently): it is a deny."""
    wasm = {"now": 1, "intent_hash": "0x", "approved": False, "history": {},
            "spend": {"asset": TOKEN.lower(), "amount": "1", "recipient": "", "kind": "transfer"}}  # fmt: skip
    result = PolicyEngine().evaluate(_policy(rule), input={}, params={}, wasm=wasm)
    assert (result.decision, result.tier) == (decision, tier)


def test_each_tier_needs_its_signatures() -> None:
    intent = transfer(5)
    for tier, needed in ((STANDARD, 2), (HIGH, 3), (ALL, 3), (HUMAN, 3), (VAULT_ONLY, 2)):
        with pytest.raises(InsufficientQuorum, match=re.escape(tier_name(tier))):
            verifier().verify(attest(intent, tier=tier, signers=needed - 1), intent)
        assert verifier().verify(attest(intent, tier=tier, signers=needed), intent)
    lowered = verifier(high_threshold=2)
    assert lowered.verify(attest(intent, tier=HIGH, signers=2), intent).attestation.tier == HIGH


def test_an_unknown_tier_is_refused_even_with_every_signature() -> None:
    intent = transfer(5)
    for tier in (8, 255):
        with pytest.raises(UnknownTier):
            verifier().verify(attest(intent, tier=tier), intent)


def test_a_relabelled_tier_recovers_to_strangers() -> None:
    intent = transfer(5)
    genuine = attest(intent, tier=ALL)
    for tier in (STANDARD, HIGH, HUMAN, ALL | VAULT_ONLY):
        with pytest.raises(UnknownOperator):
            verifier().verify(genuine.model_copy(update={"tier": tier}), intent)


def test_signatures_over_the_tierless_struct_do_not_verify() -> None:
    """Attack: replay a signature made over the old typed struct (without ``tier``), from
    before the upgrade, as a tier-0 attestation. The typehash differs, so it recovers to a
    stranger."""
    intent = transfer(5)
    fresh = attest(intent, tier=STANDARD)
    old_type = (
        b"Attestation(bytes32 taskId,bytes32 policyId,address policyClient,bytes32 intentHash,"
        b"bool allow,uint64 expiresAt)"
    )
    client = bytes.fromhex(CLIENT[2:])
    old = typed_digest(
        domain_separator(8453, client),
        keccak(keccak(old_type) + fresh.task_id + fresh.policy_id + address_word(client)
               + intent.intent_hash + bool_word(True) + uint_word(fresh.expires_at)),
    )  # fmt: skip
    replayed = Attestation.from_json(
        {
            **fresh.to_json(),
            "signatures": [
                {
                    "operator": operator_address(k),
                    "signature": "0x" + sign_attestation(k, old).hex(),
                }
                for k in KEYS
            ],
        }
    )
    with pytest.raises(UnknownOperator):
        verifier().verify(replayed, intent)


def test_the_client_minimum_beats_the_signed_tier() -> None:
    intent = transfer(2_000)
    strict = verifier(tiers={"all": {TOKEN.lower(): 1_000}})
    with pytest.raises(TierTooLow) as info:
        strict.verify(attest(intent, tier=HIGH), intent)
    assert (info.value.tier, info.value.required) == (HIGH, ALL)
    assert strict.verify(attest(intent, tier=HUMAN), intent)  # a higher level meets it
    # a tier the operators did not sign is never reported as theirs (nor judged against)
    relabelled = attest(intent, tier=HUMAN).model_copy(update={"tier": STANDARD})
    with pytest.raises(UnknownOperator):
        strict.verify(relabelled, intent)


def test_a_vault_only_tier_never_signs_an_eoa_transaction() -> None:
    """Signed vault-only, or required vault-only by the client: the EOA path refuses, a vault
    call may sign."""
    agent = Signer.from_key("0x" + "11" * 32)
    intent = TransactionIntent.erc20_transfer(
        sender=agent.address, token=TOKEN, recipient=PAYEE, amount=5, chain_id=8453
    )
    vault_intent = TransactionIntent.erc20_transfer(
        sender=CLIENT, token=TOKEN, recipient=PAYEE, amount=5, chain_id=8453
    )
    fees = {"nonce": 0, "gas": 60_000, "max_fee_per_gas": 10**9, "max_priority_fee_per_gas": 1}
    for verified in (
        verifier().verify(attest(intent, tier=VAULT_ONLY), intent),
        verifier(tiers={"vault": {"*": 1}}).verify(attest(intent, tier=STANDARD), intent),
    ):
        assert verified.assurance == "quorum-ecdsa-vault-only"
        with pytest.raises(OnchainCheckRequired, match="vault"):
            agent.sign_transaction(verified, **fees)
    through_vault = verifier().verify(attest(vault_intent, tier=VAULT_ONLY), vault_intent)
    assert agent.sign_transaction(through_vault, vault=CLIENT, **fees).raw


def test_the_wire_form_carries_the_tier() -> None:
    attestation = attest(transfer(5), tier=HUMAN)
    doc = attestation.to_json()
    assert doc["tier"] == HUMAN
    assert Attestation.from_json(doc) == attestation
    assert Attestation.from_json({k: v for k, v in doc.items() if k != "tier"}).tier == 0
    from agentguard import GatewayProtocolError

    for bad in (-1, 256, "1", True, 1.0, None):
        with pytest.raises(GatewayProtocolError, match="tier"):
            Attestation.from_json({**doc, "tier": bad})


def test_a_newton_attestation_naming_a_tier_is_refused() -> None:
    """Newton's BLS signatures cover no tier: a tier on such an attestation is unsigned
    decoration a caller could use to look stronger, so it is refused."""
    from agentguard import NewtonBindingVerifier

    intent = transfer(5)
    attestation = Attestation(
        decision="allow",
        task_id=b"\x01" * 32,
        policy_id=b"\x02" * 32,
        policy_client=CLIENT,
        intent_hash=intent.intent_hash,
        expires_at=100,
        scheme="newton-bls",
        tier=HIGH,
    )
    newton = NewtonBindingVerifier(policy_client=CLIENT, block_number=lambda: 1)
    with pytest.raises(UnknownTier, match="carry no tier"):
        newton.verify(attestation, intent)
    assert newton.verify(attestation.model_copy(update={"tier": 0}), intent)


def test_a_vault_only_payment_is_signed_only_as_the_vaults_erc1271_blob() -> None:
    """x402: the EOA authorization is refused; the vault's blob carries the signed tier, which
    the vault checks (``tests/tiers/test_vault_tiers.py``)."""
    from eth_abi.abi import decode

    from agentguard.chain.vault import PAYMENT_SIGNATURE_TYPES
    from tests.unit.test_signer import eip3009

    agent = Signer.from_key("0x" + "11" * 32)
    pay = PaymentIntent(
        payer=CLIENT, scheme="exact", network="eip155:8453", asset=TOKEN, amount=10_000,
        pay_to=PAYEE,
    )  # fmt: skip
    refused, attestation = attest(pay, tier=ALL | VAULT_ONLY), attest(pay, tier=ALL | VAULT_ONLY)
    typed = eip3009(CLIENT, PAYEE, 10_000)
    typed["message"]["nonce"] = "0x" + refused.task_id.hex()
    with pytest.raises(OnchainCheckRequired):  # and the attestation is used up
        agent.sign_payment(verifier().verify(refused, pay), typed)
    typed["message"]["nonce"] = "0x" + attestation.task_id.hex()
    blob = agent.sign_vault_payment(verifier().verify(attestation, pay), typed, vault=CLIENT)
    assert decode(list(PAYMENT_SIGNATURE_TYPES), blob)[-1] == ALL | VAULT_ONLY


def test_tiers_are_refused_for_a_newton_guard() -> None:
    """Newton's attestations carry no tier: a client minimum there could never be met, and
    silently ignoring it would sign what the client meant to forbid."""
    import httpx

    from agentguard import Guard

    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing is sent while connecting")

    for options in ({"tiers": {"all": {"*": 1}}}, {"high_threshold": 3}):
        with pytest.raises(ConfigurationError, match="no tier"):
            Guard.connect(
                "http://127.0.0.1:9/rpc",
                policy_client=CLIENT,
                any_policy=True,
                transport=httpx.MockTransport(never),
                **options,
            )
