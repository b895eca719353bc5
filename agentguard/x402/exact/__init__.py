"""x402 ``exact`` scheme (EIP-3009 ``TransferWithAuthorization``)."""
