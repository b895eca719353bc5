"""The README's Newton example, run unchanged against a recorded Newton exchange.

``recorded/newton_transfer.json`` is a **synthesized** exchange, not a capture from Newton's
servers (we have no access to Newton's real gateway): the ``newt_createTask`` request the
README's block sends and the result a Newton gateway answers, in Newton's documented shapes,
whose BN254 certificate was made by test operators (seeded keys) over an operator table on
anvil at Newton's published Base addresses. The file also records that table (seed, weights,
reference timestamp) so a replay can install it again.

Re-record (after a change to the block or the wire): ``.venv/bin/python -m
tests.newton_fake.recorded``. Replay: ``replay(doc)`` installs the table on a fresh anvil,
serves the recording with the fake gateway (which refuses any other request) and runs the block
on an anvil whose clock starts at the recording's signed ``initializationTimestamp`` (the
verifier judges a response's age by the chain's time, so the recording never goes stale).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3

from agentguard.chain import Anvil
from agentguard.newton import DEPLOYMENTS
from tests.newton.newton_quorum import NewtonQuorum
from tests.newton_fake.gateway import POLICY_ID, FakeNewton, fake_newton

ROOT = Path(__file__).resolve().parents[2]
RECORDING = Path(__file__).with_name("recorded") / "newton_transfer.json"
AGENT_KEY = "0x" + "a1" * 32  # the test agent's key (the quickstart's)
API_KEY = "newton-test-key"
SEED, WEIGHTS = b"newton-readme", (100, 100, 100)
NEWTON_VERIFIER, NEWTON_AVS = DEPLOYMENTS[8453]
NOTE = (
    "Synthesized, not captured: a newt_createTask exchange in Newton's documented shapes "
    "(newton-sdk v1.0.5, newton-contracts), certified by test BN254 operators over an operator "
    "table on anvil at Newton's published Base addresses. No request reached Newton's servers."
)


def readme_block() -> str:
    """The README's Newton code block, exactly as written."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [block] = [str(b) for b in blocks if "gateway.newton.xyz" in b]
    return block


@dataclass
class Setup:
    anvil: Anvil
    quorum: NewtonQuorum
    fake: FakeNewton

    def run_block(self, block: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "AGENT_PRIVATE_KEY": AGENT_KEY,
            "BASE_RPC_URL": self.anvil.url,
            "NEWTON_GATEWAY_URL": self.fake.url,
            "NEWTON_API_KEY": API_KEY,
            "NEWTON_POLICY_ID": POLICY_ID,
        }
        return subprocess.run(
            [sys.executable, "-c", readme_block() if block is None else block],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=ROOT,
        )


@contextmanager
def setup(recorded: dict[str, Any] | None = None) -> Iterator[Setup]:
    """anvil (8453) with the operator table at Newton's Base address, and the fake gateway:
    replaying ``recorded``, or (to record) certifying with the table's operators."""
    table = (recorded or {}).get("operator_table", {})
    # a replay runs on the recording's clock: anvil starts at the signed initializationTimestamp,
    # so the verifier (which judges freshness by the chain's time) sees a fresh response forever
    args = [] if recorded is None else ["--timestamp", str(_created_at(recorded))]
    with Anvil(args=args) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        quorum = NewtonQuorum.deploy(
            w3,
            tuple(table.get("weights", WEIGHTS)),
            seed=bytes.fromhex(table["seed"][2:]) if table else SEED,
            at=NEWTON_VERIFIER,
            avs=NEWTON_AVS,
            reference_timestamp=table.get("reference_timestamp"),
        )
        options: dict[str, Any] = (
            {"recorded": recorded}
            if recorded is not None
            else {
                "chain_block": lambda: w3.eth.block_number,
                "chain_time": lambda: int(w3.eth.get_block("latest")["timestamp"]),
            }
        )
        with fake_newton(quorum.certify, **options) as fake:
            yield Setup(anvil, quorum, fake)


def _created_at(recorded: dict[str, Any]) -> int:
    """The recorded response's signed ``initializationTimestamp`` (seconds)."""
    task = recorded["newt_createTask"]["response"]["result"]["task"]
    return int(task["initializationTimestamp"], 16)


def record() -> dict[str, Any]:
    """Run the README block against the certifying fake and keep what crossed the wire."""
    with setup() as s:
        done = s.run_block()
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        [request] = s.fake.calls("newt_createTask")
        [result] = s.fake.results
        request = {k: v for k, v in request.items() if k != "id"}  # the client's request id
        return {
            "note": NOTE,
            "operator_table": {
                "certificate_verifier": NEWTON_VERIFIER,
                "source_avs": NEWTON_AVS,
                "operator_set_id": 0,
                "seed": "0x" + SEED.hex(),
                "weights": list(WEIGHTS),
                "reference_timestamp": s.quorum.reference_timestamp,
            },
            "newt_createTask": {
                "request": request,
                "response": {"jsonrpc": "2.0", "result": result},
            },
        }


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(RECORDING.read_text())
    return doc


if __name__ == "__main__":
    RECORDING.write_text(json.dumps(record(), indent=2) + "\n")
    print(f"wrote {RECORDING.relative_to(ROOT)}")
