// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// Test-only: Solidity's own ABI encoder/decoder and the EVM precompiles, to pin the Python
/// encodings and BN254 operations of agentguard.newton against what Newton's contracts compute.
contract NewtonProbe {
    struct Intent {
        address from;
        address to;
        uint256 value;
        bytes data;
        uint256 chainId;
        bytes functionSignature;
    }

    struct PolicyData {
        bytes wasmArgs;
        bytes data;
        address policyDataAddress;
        uint32 expireBlock;
    }

    struct PolicyTaskData {
        bytes32 policyId;
        address policyAddress;
        bytes policy;
        PolicyData[] policyData;
    }

    struct PolicyConfig {
        bytes policyParams;
        uint32 expireAfter;
    }

    struct TaskResponse {
        bytes32 taskId;
        address policyClient;
        bytes32 policyId;
        address policyAddress;
        Intent intent;
        bytes intentSignature;
        bytes evaluationResult;
        PolicyTaskData policyTaskData;
        PolicyConfig policyConfig;
        uint256 initializationTimestamp;
    }

    struct G1Point {
        uint256 X;
        uint256 Y;
    }

    struct G2Point {
        uint256[2] X;
        uint256[2] Y;
    }

    struct OperatorInfo {
        G1Point pubkey;
        uint256[] weights;
    }

    struct Witness {
        uint32 operatorIndex;
        bytes operatorInfoProof;
        OperatorInfo operatorInfo;
    }

    struct Certificate {
        uint32 referenceTimestamp;
        bytes32 messageHash;
        G1Point signature;
        G2Point apk;
        Witness[] nonSignerWitnesses;
    }

    uint256 internal constant P = 21888242871839275222246405745257275088696311157297823662689037894645226208583;

    function consensusDigest(TaskResponse calldata response) external pure returns (bytes32) {
        return keccak256(abi.encode(response));
    }

    function reencodeCertificate(bytes calldata data) external pure returns (bytes memory) {
        return abi.encode(abi.decode(data, (Certificate)));
    }

    function operatorInfoLeaf(OperatorInfo calldata info) external pure returns (bytes32) {
        return keccak256(abi.encodePacked(uint8(0x75), abi.encode(info)));
    }

    function certificateDigest(uint32 referenceTimestamp, bytes32 messageHash) external pure returns (bytes32) {
        bytes32 typehash = keccak256("BN254Certificate(uint32 referenceTimestamp,bytes32 messageHash)");
        return keccak256(abi.encode(typehash, referenceTimestamp, messageHash));
    }

    function hashToG1(bytes32 digest) external view returns (uint256 x, uint256 y) {
        x = uint256(digest) % P;
        while (true) {
            uint256 beta = addmod(mulmod(mulmod(x, x, P), x, P), 3, P);
            y = _expmod(beta, (P + 1) / 4);
            if (mulmod(y, y, P) == beta) return (x, y);
            x = addmod(x, 1, P);
        }
    }

    function pairing(bytes calldata input) external view returns (bool) {
        (bool ok, bytes memory out) = address(8).staticcall(input);
        require(ok && out.length == 32, "pairing precompile refused the input");
        return abi.decode(out, (uint256)) == 1;
    }

    function _expmod(uint256 base, uint256 exponent) internal view returns (uint256) {
        (bool ok, bytes memory out) = address(5).staticcall(abi.encode(32, 32, 32, base, exponent, P));
        require(ok, "modexp failed");
        return abi.decode(out, (uint256));
    }
}
