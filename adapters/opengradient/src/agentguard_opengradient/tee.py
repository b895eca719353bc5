"""Trusting OpenGradient enclaves through OpenGradient's onchain TEE registry.

    from web3 import Web3
    from agentguard_opengradient.tee import PinnedTransport, TeeRegistry

    registry = TeeRegistry(Web3(Web3.HTTPProvider(my_og_rpc)))   # or TeeRegistry.from_rpc()
    tee = registry.choose()                                      # an active enclave
    client = auth.client(base_url=tee.endpoint, transport=PinnedTransport(registry),
                         trust_env=False)
    ...
    proof = registry.verify(answer, canonical_request=canonical, output=text,
                            endpoint=tee.endpoint)

``registry.verify`` takes the signing key from the registry (never from the endpoint) and
refuses a TEE that is not active there (``TeeNotActive``); ``PinnedTransport`` (and
``AsyncPinnedTransport``) connect only to registered endpoints and only when the server shows
exactly the registered TLS certificate (``TlsPinMismatch`` otherwise, before anything is sent).
"""

from agentguard_opengradient._tee_registry import (
    LLM_PROXY,
    OPENGRADIENT_REGISTRY_RPC,
    OPENGRADIENT_TEE_REGISTRY,
    TEE_REGISTRY_ABI,
    RegisteredTee,
    TeeRegistry,
)
from agentguard_opengradient._tls import AsyncPinnedTransport, PinnedTransport, pinned_ssl_context

__all__ = [
    "LLM_PROXY",
    "OPENGRADIENT_REGISTRY_RPC",
    "OPENGRADIENT_TEE_REGISTRY",
    "TEE_REGISTRY_ABI",
    "AsyncPinnedTransport",
    "PinnedTransport",
    "RegisteredTee",
    "TeeRegistry",
    "pinned_ssl_context",
]
