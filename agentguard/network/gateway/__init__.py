"""The gateway of the reference network: Newton's gateway JSON-RPC in front of N operators.

``python -m agentguard.network.gateway --config network.json``

For ``newt_createTask`` it checks the caller and the request, builds the policy's
``data.wasm`` from its own records (``state``), asks every operator at once, verifies each
operator's signature over the digest it recomputes itself, and answers as soon as a quorum
agrees on one decision. An ``allow`` is recorded before it is returned, so cumulative caps
count it even if the client never reports back. See ``docs/architecture.md`` for the wire
formats.

One concern per module: ``_auth`` (API keys), ``_registry`` (policy clients), ``_validation``
(task input), ``_idempotency`` (retries), ``_core`` (the ``Gateway`` and the create-task flow),
``_operators`` (operator links and calls), ``_fanout`` (hedged fan-out and votes),
``_results`` (``data.wasm`` and Newton's result), ``_simulate``, ``_settle`` (release and
commit), ``_approvals``, ``_dispatch`` (JSON-RPC methods), ``_app`` (HTTP handler and
``main``).
"""

from agentguard.network.gateway._app import create_app, main
from agentguard.network.gateway._core import Gateway

__all__ = ["Gateway", "create_app", "main"]
