"""Red-team findings on trust tiers, each reproduced as the attack that worked before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from coincurve import PrivateKey

from agentguard import TierTooLow, TransactionIntent
from agentguard._eip712 import keccak
from agentguard._tiers import HIGH, HUMAN, STANDARD, VAULT_ONLY, MinimumTiers
from agentguard.network._rpc import RPCError
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from tests.approvals.test_operator_approvals import request, signed
from tests.tiers.test_tier_rules import AGENT, PAYEE, TOKEN, attest, transfer, verifier

POOL = "0x4444444444444444444444444444444444444444"
WITHDRAW = "withdraw(address,uint256,address)"


def unknown_call(amount: int) -> TransactionIntent:
    """A lending pool's ``withdraw(asset, amount, to)``: it moves ``amount`` of the agent's
    deposit to ``to``, but its selector is outside agentguard's table, so the calldata is not
    valued (``Spend.kind == "unknown_call"``, amount = the ETH it sends: 0)."""
    data = (
        keccak(WITHDRAW.encode())[:4]
        + bytes(12) + bytes.fromhex(TOKEN[2:])
        + amount.to_bytes(32, "big")
        + bytes(12) + bytes.fromhex(PAYEE[2:])
    )  # fmt: skip
    return TransactionIntent(
        from_=AGENT, to=POOL, data=data, function_signature=WITHDRAW, chain_id=8453
    )


def test_an_unknown_call_does_not_slip_under_the_clients_minimum_tier() -> None:
    """Attack: the client requires tier ``human`` above 1000 units of anything (``"*"``). A
    call agentguard cannot value (here a pool withdrawal of 10^12 units to a payee, which the
    policy owner allowlisted) was judged by its ETH value, 0, so an attestation at tier
    ``standard`` verified and the wallet could sign it: the client's own minimum, meant to hold
    even when the policy (or a lying quorum) says standard, did not apply. Before the fix,
    ``verify`` returned a ticket; now the call counts as unbounded under ``"*"`` rules (as an
    NFT does) and is ``TierTooLow``."""
    rules = {"human": {"*": 1_000}, "vault": {"*": 5_000}}
    intent = unknown_call(10**12)
    assert intent.spend.kind == "unknown_call" and intent.spend.amount == 0
    assert MinimumTiers.parse(rules).required(intent.spend) == HUMAN | VAULT_ONLY
    with pytest.raises(TierTooLow, match="cannot value counts as unbounded") as info:
        verifier(tiers=rules).verify(attest(intent, tier=STANDARD), intent)
    assert (info.value.tier, info.value.required) == (STANDARD, HUMAN | VAULT_ONLY)
    # at the tier the client asks for it verifies, and only as a vault-only ticket
    verified = verifier(tiers=rules).verify(attest(intent, tier=HUMAN | VAULT_ONLY), intent)
    assert verified.assurance == "quorum-ecdsa-vault-only"
    # a per-token rule does not name the pool call's (native) asset: it stays unjudged by it,
    # and a known transfer is still judged by its amount
    per_token = MinimumTiers.parse({"high": {TOKEN: 1_000}})
    assert per_token.required(intent.spend) == STANDARD
    assert per_token.required(transfer(1_001).spend) == HIGH


def test_an_approval_allows_one_task_also_across_an_operator_restart(tmp_path: Path) -> None:
    """Attack: a gateway keeps a person's signed approval of one large payment (tier
    ``human``, or a policy's ``approval_above``: every operator signs ``allow`` only over a
    checked approval). Each operator remembered which task the approval was used for in
    memory only, so after a restart (a deploy, a crash) the gateway sent the same approval
    with a new task id and every operator signed a second ``allow``: two payments for one
    approval. Before the fix the restarted
    operator signed; now the claim is kept in the operator's registry file."""
    key, path = PrivateKey(), tmp_path / "registry.sqlite"
    approval = signed()
    used = request(approval)
    assert Operator(key, Registry(path)).evaluate_and_sign(used)["decision"] == "allow"
    restarted = Operator(key, Registry(path))
    with pytest.raises(RPCError, match="already used"):
        restarted.evaluate_and_sign(request(approval))
    # the task it was used for may be asked again (a gateway's retry)
    assert restarted.evaluate_and_sign(used)["decision"] == "allow"
