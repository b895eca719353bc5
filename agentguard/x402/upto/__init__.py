"""x402 ``upto`` scheme (Permit2 ``PermitWitnessTransferFrom``, reused across a session)."""
