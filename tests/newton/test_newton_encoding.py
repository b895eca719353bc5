"""The Python encodings and BN254 operations of ``agentguard.newton`` equal what Solidity and
the EVM compute (a test contract compiled by the pinned solc-js, run on anvil): the consensus
digest of a task response, the certificate's ABI encoding, the operator-info leaf, the
certificate digest, ``hashToG1`` and the pairing check (py_ecc against precompile 0x08)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard._exceptions import MalformedAttestation
from agentguard._intent import TransactionIntent
from agentguard.chain import transact
from agentguard.newton import (
    BN254Certificate,
    Task,
    TaskResponse,
    aggregate_g1,
    aggregate_g2,
    certificate_digest,
    hash_to_g1,
    keypair,
    local_pairing,
    operator_info_leaf,
    sign,
    verify_signature,
)
from agentguard.newton._bn254 import NEG_G2, pairing_input
from tests.newton.conftest import Chain
from tests.newton.newton_quorum import OWNER, newton_result

REPO = Path(__file__).resolve().parents[2]
INTENT = TransactionIntent(
    from_="0x1111111111111111111111111111111111111111",
    to="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    data="0xa9059cbb000000000000000000000000000000000000000000000000000000000000beef"
    "00000000000000000000000000000000000000000000000000000000000f4240",
    function_signature="transfer(address,uint256)",
    chain_id=8453,
)


@pytest.fixture(scope="module")
def probe(chain_session: Chain) -> Contract:
    source = (Path(__file__).parent / "NewtonProbe.sol").read_text()
    standard = {
        "language": "Solidity",
        "sources": {"NewtonProbe.sol": {"content": source}},
        "settings": {
            "evmVersion": "cancun",
            "outputSelection": {"*": {"NewtonProbe": ["abi", "evm.bytecode.object"]}},
        },
    }
    script = (
        "const solc = require('solc'); let input = '';"
        "process.stdin.on('data', (d) => (input += d));"
        "process.stdin.on('end', () => process.stdout.write(solc.compile(input)));"
    )
    out = json.loads(
        subprocess.run(
            ["node", "-e", script],
            input=json.dumps(standard).encode(),
            capture_output=True,
            check=True,
            cwd=REPO,
        ).stdout
    )
    assert not [e for e in out.get("errors", []) if e["severity"] == "error"], out["errors"]
    compiled = out["contracts"]["NewtonProbe.sol"]["NewtonProbe"]
    w3 = chain_session.w3
    factory = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["evm"]["bytecode"]["object"])
    receipt = transact(w3, factory.constructor(), sender=OWNER)
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=compiled["abi"])


def _checksummed(value: Any) -> Any:
    """web3 wants checksummed address strings inside tuples."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return Web3.to_checksum_address(value)
    if isinstance(value, tuple | list):
        return type(value)(_checksummed(v) for v in value)
    return value


def _response(**overrides: Any) -> TaskResponse:
    result = newton_result(
        INTENT,
        policy_client="0x0000000000000000000000000000000000000c1e",
        policy_id=os.urandom(32),
        task_id=os.urandom(32),
        expiration=1000,
        task_created_block=900,
        **overrides,
    )
    return TaskResponse.parse(result["task_response"])


def test_consensus_digest_equals_solidity(probe: Contract) -> None:
    for response in (_response(), _response(allow=False, expire_after=2**32 - 1)):
        solidity = probe.functions.consensusDigest(_checksummed(response.abi())).call()
        assert bytes(solidity) == response.consensus_digest()


def test_certificate_encoding_round_trips_through_solidity(
    probe: Contract, chain_session: Chain
) -> None:
    cert = chain_session.quorum.certificate(os.urandom(32), signers=[1])
    assert len(cert.non_signer_witnesses) == 2
    raw = cert.encode()
    assert bytes(probe.functions.reencodeCertificate(raw).call()) == raw
    assert BN254Certificate.decode(raw) == cert


def test_non_canonical_certificate_bytes_are_refused(chain_session: Chain) -> None:
    raw = chain_session.quorum.certificate(os.urandom(32), signers=[1]).encode()
    with pytest.raises(MalformedAttestation, match="canonical"):
        BN254Certificate.decode(raw + b"\x00" * 32)
    with pytest.raises(MalformedAttestation):
        BN254Certificate.decode(raw[:-32])


def test_leaf_and_certificate_digest_equal_solidity(probe: Contract, chain_session: Chain) -> None:
    info = chain_session.quorum.operators[0].info
    assert bytes(probe.functions.operatorInfoLeaf(info.abi()).call()) == operator_info_leaf(info)
    message = os.urandom(32)
    assert bytes(probe.functions.certificateDigest(1_700_000_000, message).call()) == (
        certificate_digest(1_700_000_000, message)
    )


def test_hash_to_g1_equals_the_evm(probe: Contract) -> None:
    for digest in [os.urandom(32) for _ in range(8)] + [b"\xff" * 32, b"\x00" * 32]:
        assert tuple(probe.functions.hashToG1(digest).call()) == hash_to_g1(digest)


def test_local_pairing_agrees_with_the_precompile(probe: Contract) -> None:
    keys = [keypair(bytes([i])) for i in range(2)]
    digest = os.urandom(32)
    signature = aggregate_g1([sign(k[0], digest) for k in keys])
    apk1, apk2 = aggregate_g1([k[1] for k in keys]), aggregate_g2([k[2] for k in keys])

    def precompile(pairs: Any) -> bool:
        return bool(probe.functions.pairing(pairing_input(pairs)).call())

    for message, g2 in ((digest, apk2), (os.urandom(32), apk2), (digest, keys[0][2])):
        expected = verify_signature(message, signature, apk1, g2, local_pairing)
        assert verify_signature(message, signature, apk1, g2, precompile) is expected
    assert verify_signature(digest, signature, apk1, apk2, precompile)
    assert local_pairing([((1, 2), NEG_G2), ((1, 2), aggregate_g2([keypair(b"")[2]]))]) is False


def test_task_and_response_read_both_spellings_and_refuse_disagreeing_ones() -> None:
    result = newton_result(
        INTENT,
        policy_client="0x0000000000000000000000000000000000000c1e",
        policy_id=b"\x01" * 32,
        task_id=b"\x02" * 32,
        expiration=1000,
        task_created_block=900,
        initialization_timestamp=1_764_000_000,
    )
    task = Task.parse(result["task"])
    snake = {
        "task_id": "0x" + "02" * 32,
        "policy_client": "0x0000000000000000000000000000000000000c1e",
        "task_created_block": 900,
        "quorum_threshold_percentage": 40,
        "intent": result["task"]["intent"],
        "intent_signature": "0x",
        "wasm_args": "0x",
        "quorum_numbers": "0x00",
        "initialization_timestamp": 1_764_000_000,
    }
    assert Task.parse(snake) == task
    with pytest.raises(MalformedAttestation, match="different values"):
        Task.parse({**result["task"], "task_created_block": 901})
    assert task.intent.intent_hash == INTENT.intent_hash
    response = result["task_response"]
    with pytest.raises(MalformedAttestation, match="policy_config"):
        TaskResponse.parse({**response, "policy_config": {"policyParams": "0x"}})
    with pytest.raises(MalformedAttestation, match="uint32"):
        TaskResponse.parse(
            {**response, "policy_config": {"policyParams": "0x", "expireAfter": 2**32}}
        )
