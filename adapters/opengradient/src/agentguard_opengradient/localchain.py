"""OpenGradient's onchain pieces on a local anvil chain: OPG, Permit2 and the x402 upto proxy.

Permit2 and the proxy are deployed normally, then their runtime code is copied to the
canonical addresses (``anvil_setCode``) where x402 clients expect them; both contracts keep
no deploy-time state, so the copies behave exactly like the originals.
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from agentguard import ConfigurationError
from agentguard.chain import deploy, load_artifact
from agentguard.x402 import PERMIT2, UPTO_PERMIT2_PROXY

__all__ = ["PERMIT2", "UPTO_PERMIT2_PROXY", "deploy_opg", "install_permit2"]


def _place(w3: Web3, name: str, address: str, sender: str | LocalAccount) -> Contract:
    deployed = deploy(w3, name, sender=sender)
    code = bytes(w3.eth.get_code(deployed.address))
    answer = w3.provider.make_request("anvil_setCode", [address, "0x" + code.hex()])  # type: ignore[arg-type]
    if answer.get("error"):
        raise ConfigurationError(f"anvil refused anvil_setCode for {name}: {answer['error']}")
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)


def install_permit2(w3: Web3, *, sender: str | LocalAccount) -> tuple[Contract, Contract]:
    """Permit2 and the x402 upto proxy at their canonical addresses; returns both, bound."""
    return (
        _place(w3, "Permit2", PERMIT2, sender),
        _place(w3, "X402UptoPermit2Proxy", UPTO_PERMIT2_PROXY, sender),
    )


def deploy_opg(w3: Web3, *, sender: str | LocalAccount) -> Contract:
    """A fresh OPG stand-in (18 decimals, x402 domain "OpenGradient" / "1"); ``sender`` mints."""
    return deploy(w3, "OpgToken", sender=sender)
