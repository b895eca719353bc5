// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4);
}

/// Test-only: the worthless token of issue 14's attack. It claims any EIP-712 domain it is given
/// (USDC's, say), answers `authorizationState` with whatever word it is told (or not at all),
/// "transfers" nothing, and can ask a vault about a digest the way a token settling an
/// EIP-3009 authorization would.
contract FakeToken {
    bytes32 public DOMAIN_SEPARATOR;
    uint256 public nonceWord;
    bool public silent;

    constructor(bytes32 domainSeparator) {
        DOMAIN_SEPARATOR = domainSeparator;
    }

    function setDomainSeparator(bytes32 domainSeparator) external {
        DOMAIN_SEPARATOR = domainSeparator;
    }

    function setNonceAnswer(uint256 word, bool silent_) external {
        nonceWord = word;
        silent = silent_;
    }

    /// Declared as a word, not a bool, so it can answer what no honest token would.
    function authorizationState(address, bytes32) external view returns (uint256) {
        require(!silent);
        return nonceWord;
    }

    function transfer(address, uint256) external pure returns (bool) {
        return true;
    }

    /// What `vault` answers when this contract asks it, as a token would, about `hash`.
    function ask(address vault, bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        return IERC1271(vault).isValidSignature(hash, signature);
    }
}
