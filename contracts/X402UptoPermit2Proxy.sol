// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Permit2} from "./Permit2.sol";

/// @title X402UptoPermit2Proxy
/// @notice The Permit2 spender of x402's `upto` scheme: settles a signed maximum for the
///         amount actually used. The payer's signature covers a witness `{to, facilitator,
///         validAfter}`, so only the named facilitator can settle, only after `validAfter`,
///         and only to the named payee; the facilitator chooses nothing but the amount
///         (at most the signed maximum).
/// @dev Written for agentguard's local chains and placed at x402's canonical upto-proxy
///      address in tests; it holds no state and no immutables, so its runtime code works at
///      any address. Permit2 is addressed at its canonical address.
contract X402UptoPermit2Proxy {
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    address public constant PERMIT2 = 0x000000000022D473030F116dDEE9F6B43aC78BA3;
    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");
    /// Completes Permit2's `PermitWitnessTransferFrom(...,` stub; referenced types sorted by name.
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";

    event Settled(address indexed owner, address indexed to, address indexed token, uint256 amount, uint256 nonce);

    error AmountExceedsPermitted(uint256 amount, uint256 permitted);
    error UnauthorizedFacilitator(address caller, address facilitator);
    error PaymentTooEarly(uint256 validAfter, uint256 timestamp);
    error InvalidDestination();

    /// @notice Transfers `amount` (≤ `permit.permitted.amount`) from `owner` to `witness.to`.
    function settle(
        Permit2.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external {
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted(amount, permit.permitted.amount);
        if (witness.facilitator != msg.sender) revert UnauthorizedFacilitator(msg.sender, witness.facilitator);
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly(witness.validAfter, block.timestamp);
        if (witness.to == address(0)) revert InvalidDestination();
        bytes32 witnessHash =
            keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
        Permit2(PERMIT2).permitWitnessTransferFrom(
            permit,
            Permit2.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
        emit Settled(owner, witness.to, permit.permitted.token, amount, permit.nonce);
    }
}
