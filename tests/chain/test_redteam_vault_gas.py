"""Red team: single use must not depend on the gas limit an attacker chooses.

On the x402 path the vault relies on the token's EIP-3009 nonce record; ``execute`` reads that
record on its target to refuse a task already settled as a payment. A read that fails counts as
"this target keeps no nonces", so if the attacker (the agent host sending ``execute``) can make
the read fail by starving it of gas, the attestation pays twice.
"""

from __future__ import annotations

from typing import Any

from web3.exceptions import ContractCustomError, ContractLogicError

from agentguard.chain import execute_args, transact
from tests.chain.helpers import (
    AGENT,
    FACILITATOR,
    PAYEE,
    PAYMENT_AMOUNT,
    VAULT_USDC,
    DeployTest,
    Env,
    Payment,
    decode_revert,
)

ROUNDS = 20_000  # about 7.8M gas per authorizationState answer


def _replay(env: Env, p: Payment) -> Any:
    return env.vault.functions.execute(*execute_args(p.intent.newton_intent(), p.attestation))


def test_starving_the_nonce_query_does_not_pay_twice(env: Env, deploy_test: DeployTest) -> None:
    """Before the fix the vault forwarded all its gas to ``authorizationState`` and read a
    failed call as "no nonce record". With a token whose honest answer costs more than 64 times
    what ``execute`` needs afterwards, the agent replayed a settled x402 payment's attestation
    through ``execute`` with a gas limit that starved the query (at 6M, say): it paid again.
    Now the query always gets exactly ``NONCE_QUERY_GAS``: such a token never answers, so the
    vault never lets it settle a payment in the first place, and the attestation pays once."""
    heavy = deploy_test(env.w3, "HeavyNonceToken", env.vault.address, VAULT_USDC, ROUNDS)
    p = Payment(env, token=heavy)
    settle = p.settle_call().transact({"from": FACILITATOR, "gas": 29_000_000})
    env.w3.eth.wait_for_transaction_receipt(settle)
    execute = _replay(env, p)
    outcomes = []
    for gas in range(4_000_000, 9_000_001, 500_000):
        tx = execute.transact({"from": AGENT, "gas": gas})
        outcomes.append(env.w3.eth.wait_for_transaction_receipt(tx)["status"])
    assert int(heavy.functions.balanceOf(PAYEE).call()) == PAYMENT_AMOUNT, outcomes
    assert outcomes.count(1) <= 1


def _outcome(call: Any, gas: int) -> str:
    try:
        call.call({"from": AGENT, "gas": gas})
    except ContractCustomError as exc:
        return decode_revert(exc.data)[0]
    except ContractLogicError:
        return "out of gas"
    return "executed"


def test_at_no_gas_limit_does_a_settled_payment_run_through_execute(env: Env) -> None:
    """The same replay against the real token shape (USDC answers in about 10k gas): every gas
    limit from too little to plenty ends in a refusal: a starved query is refused outright
    (``NonceQueryStarved``), never read as "no record"."""
    p = Payment(env)
    transact(env.w3, p.settle_call(), sender=FACILITATOR)
    execute = _replay(env, p)
    seen = {_outcome(execute, gas) for gas in range(40_000, 200_000, 2_500)}
    assert seen <= {"out of gas", "NonceQueryStarved", "TaskAlreadyUsed"}, seen
    assert {"NonceQueryStarved", "TaskAlreadyUsed"} <= seen
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT
