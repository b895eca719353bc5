"""The reference authorization network: a gateway and N operators speaking Newton's gateway
JSON-RPC, evaluating Rego policies and signing ECDSA attestations (``docs/architecture.md``).

Needs the ``network`` extra (starlette, uvicorn, regopy, jsonschema). ``ReferenceNetwork``
starts one locally; ``agentguard network up`` runs one in the foreground.
"""

from agentguard.network.launcher import ReferenceNetwork

__all__ = ["ReferenceNetwork"]
