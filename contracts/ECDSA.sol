// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @notice Signature recovery that refuses malleable signatures.
/// @dev Same acceptance rule as agentguard's Python `recover_signer`: 65 bytes `r ‖ s ‖ v`,
///      v ∈ {27, 28}, s ≤ n/2. Anything else recovers to address(0), which no caller accepts.
library ECDSA {
    /// secp256k1 group order n, halved: the largest s a canonical (low-s) signature may carry.
    uint256 internal constant HALF_N =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    function tryRecover(bytes32 digest, bytes memory signature) internal pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
        return tryRecover(digest, v, r, s);
    }

    function tryRecover(bytes32 digest, uint8 v, bytes32 r, bytes32 s)
        internal
        pure
        returns (address)
    {
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
