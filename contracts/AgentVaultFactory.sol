// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AgentVault} from "./AgentVault.sol";

/// @title AgentVaultFactory
/// @notice Deploys AgentVaults as EIP-1167 clones and initializes them in the same transaction,
///         so no one can initialize a vault before its creator does.
/// @dev The CREATE2 salt is mixed with the caller, so nobody can take the address you plan
///      to use (your vault's address is part of its policy id, so it is known in advance).
contract AgentVaultFactory {
    /// The locked implementation every clone delegates to.
    address public immutable implementation;

    event VaultCreated(address indexed vault, address indexed creator, address indexed agent, bytes32 policyId);

    error VaultExists(address vault);

    constructor() {
        implementation = address(new AgentVault());
    }

    function createVault(
        address owner,
        address agent,
        address[] calldata operators,
        uint256 threshold,
        bytes32 policyId,
        bytes32 salt
    ) external returns (address vault) {
        vault = _clone(salt);
        AgentVault(payable(vault)).initialize(owner, agent, operators, threshold, policyId);
        emit VaultCreated(vault, msg.sender, agent, policyId);
    }

    /// A vault in Newton mode: `validator` (Newton's `validateAttestationDirect` interface)
    /// checks its attestations. Same address scheme as `createVault`.
    function createNewtonVault(address owner, address agent, address validator, bytes32 policyId, bytes32 salt)
        external
        returns (address vault)
    {
        vault = _clone(salt);
        AgentVault(payable(vault)).initializeNewton(owner, agent, validator, policyId);
        emit VaultCreated(vault, msg.sender, agent, policyId);
    }

    /// The address `createVault` will give `creator` for `salt`.
    function predictVault(address creator, bytes32 salt) public view returns (address) {
        bytes32 h = keccak256(
            abi.encodePacked(bytes1(0xff), address(this), _mixSalt(creator, salt), keccak256(_cloneCode()))
        );
        return address(uint160(uint256(h)));
    }

    /// Deploys the clone for (caller, `salt`), uninitialized: callers initialize it at once.
    function _clone(bytes32 salt) private returns (address vault) {
        bytes memory code = _cloneCode();
        bytes32 mixed = _mixSalt(msg.sender, salt);
        assembly ("memory-safe") {
            vault := create2(0, add(code, 0x20), mload(code), mixed)
        }
        if (vault == address(0)) revert VaultExists(predictVault(msg.sender, salt));
    }

    /// EIP-1167 minimal proxy creation code for `implementation`.
    function _cloneCode() private view returns (bytes memory) {
        return abi.encodePacked(
            hex"3d602d80600a3d3981f3363d3d373d3d3d363d73", implementation, hex"5af43d82803e903d91602b57fd5bf3"
        );
    }

    function _mixSalt(address creator, bytes32 salt) private pure returns (bytes32) {
        return keccak256(abi.encode(creator, salt));
    }
}
