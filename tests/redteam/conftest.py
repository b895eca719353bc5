"""One real reference network (the x402 package's) and one anvil 8453 chain (the wallet
package's) for the pipeline red-team tests."""

from tests.wallet.conftest import chain, snapshot
from tests.x402.conftest import guard, ledger, network, signer, signing_spy

__all__ = ["chain", "guard", "ledger", "network", "signer", "signing_spy", "snapshot"]
