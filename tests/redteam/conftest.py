"""The x402 package's real reference network and pieces, for the pipeline red-team tests."""

from tests.x402.conftest import guard, ledger, network, signer, signing_spy

__all__ = ["guard", "ledger", "network", "signer", "signing_spy"]
