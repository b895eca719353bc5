"""Offchain actions: a tool or function call whose call itself is the action to authorize.

``call_intent(agent, name, arguments, chain_id=...)`` is the intent a policy sees for such a
call; ``Guard.run_call`` and ``@guard.action`` run the function only after the pipeline
verified an attestation for exactly that intent (``agentguard.actions._run``).
"""

from agentguard.actions._intent import (
    MAX_ARGUMENT_VALUES,
    MAX_ARGUMENTS_BYTES,
    OFFCHAIN_TARGET,
    call_intent,
)

__all__ = ["MAX_ARGUMENTS_BYTES", "MAX_ARGUMENT_VALUES", "OFFCHAIN_TARGET", "call_intent"]
