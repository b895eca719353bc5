"""Shadow mode: roll a policy out without blocking anything (``python examples/shadow.py``).

A reference authorization network runs in-process with a policy that allows only
``send_email``. The agent's tools are decorated with ``shadow=True``: every call is evaluated
(the gateway's dry run), its would-be decision is written to the hash-chained audit log and
logged, and the tool runs regardless. Read the log to see what the policy would have refused.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agentguard import Guard
from agentguard.audit import AuditLog
from agentguard.chain import DEV_ACCOUNTS
from agentguard.network.launcher import ReferenceNetwork

AGENT = DEV_ACCOUNTS[1].address
CLIENT = "0x00000000000000000000000000000000005AD0E0"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ReferenceNetwork(operators=3) as net:
        policy_id = net.register_policy_client(
            CLIENT, "agent_spend", {"offchain_calls": ["send_email"]}
        )
        guard = Guard.connect(
            net.url, policy_client=CLIENT, operators=net.operator_addresses,
            api_key=net.api_key, policy_id=policy_id,
        )  # fmt: skip
        audit = AuditLog(Path(tmp) / "audit.jsonl")

        @guard.action(shadow=True, agent=AGENT, audit=audit)
        def send_email(to: str) -> str:
            return f"sent to {to}"

        @guard.action(shadow=True, agent=AGENT, audit=audit)
        def delete_account(user: str) -> str:
            return f"deleted {user}"

        print(send_email("ann@example.com"))
        print(delete_account("ann"))  # runs: shadow mode never blocks
        print("\nwhat the policy would have decided (audit log):")
        for entry in audit.entries():
            name, record = entry.record["name"], entry.record
            print(f"  {name}: {record['decision']} {'; '.join(record['reasons'])}".rstrip())


if __name__ == "__main__":
    main()
