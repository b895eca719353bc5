"""x402 payments an agent makes only under a verified attestation, and never twice.

    auth = X402Auth(signer=signer, guard=guard, ledger=ledger,
                    allowances=Allowances({USDC: 1_000_000}))
    with auth.client() as http:
        response = http.get("https://api.example.com/paid")
        print(receipt(response))

Schemes: ``exact`` (EIP-3009) and ``upto`` (Permit2, with sessions); x402 v1 and v2.
``PERMIT2`` and ``UPTO_PERMIT2_PROXY`` are the canonical Permit2 and x402 upto proxy addresses
(an ``upto`` payer approves Permit2 once). A payment whose outcome is unknown stays counted in
the ledger until ``ledger.recover(resolver(w3))`` reads the chain.
"""

from agentguard.x402._auth import UPTO_CHARGE, UPTO_SESSION, X402Auth
from agentguard.x402._receipt import Receipt, receipt
from agentguard.x402._recovery import resolver
from agentguard.x402._select import Allowances
from agentguard.x402.upto.client import PERMIT2, UPTO_PERMIT2_PROXY

__all__ = [
    "PERMIT2",
    "UPTO_CHARGE",
    "UPTO_PERMIT2_PROXY",
    "UPTO_SESSION",
    "Allowances",
    "Receipt",
    "X402Auth",
    "receipt",
    "resolver",
]
