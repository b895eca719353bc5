// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title TeeRegistry (test stand-in)
/// @notice A stand-in for OpenGradient's onchain TEERegistry, for tests on anvil only. Its
///         read functions have OpenGradient's ABI (the `TEERegistry.abi` OpenGradient's SDK
///         ships, OpenGradient-SDK commit 0afa3f3): `getActiveTEEs(uint8)`, `getTEE(bytes32)`,
///         `isTEEActive(bytes32)` and the `TEEInfo` / `OhttpConfig` structs. As there, a TEE's
///         id is keccak256 of its DER public key, and a TEE is active when it is enabled, its
///         build measurement (PCR hash) is approved and its heartbeat is fresh. Registration is
///         by the admin, without the Nitro attestation the real registry verifies.
contract TeeRegistry {
    struct OhttpConfig {
        uint8 keyId;
        uint16 kemId;
        uint16 kdfId;
        uint16 aeadId;
        bytes publicKey;
        bytes keyConfig;
        uint256 registeredAt;
    }

    struct TEEInfo {
        address owner;
        address paymentAddress;
        string endpoint;
        bytes publicKey;
        bytes tlsCertificate;
        bytes32 pcrHash;
        uint8 teeType;
        bool enabled;
        uint256 registeredAt;
        uint256 lastHeartbeatAt;
        OhttpConfig ohttpConfig;
    }

    address public immutable admin;
    uint256 public heartbeatMaxAge = 1800;
    mapping(bytes32 => bool) public approvedPCRs;
    mapping(bytes32 => TEEInfo) private _tees;
    mapping(uint8 => bytes32[]) private _byType;

    error NotAdmin();
    error TEEAlreadyExists();
    error TEENotFound();

    constructor() {
        admin = msg.sender;
    }

    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin();
        _;
    }

    function approvePCR(bytes32 pcrHash) external onlyAdmin {
        approvedPCRs[pcrHash] = true;
    }

    function revokePCR(bytes32 pcrHash) external onlyAdmin {
        approvedPCRs[pcrHash] = false;
    }

    function setHeartbeatMaxAge(uint256 maxAge) external onlyAdmin {
        heartbeatMaxAge = maxAge;
    }

    function registerTEE(
        bytes calldata publicKey,
        bytes calldata tlsCertificate,
        address paymentAddress,
        string calldata endpoint,
        bytes32 pcrHash,
        uint8 teeType
    ) external onlyAdmin returns (bytes32 teeId) {
        teeId = keccak256(publicKey);
        if (_tees[teeId].registeredAt != 0) revert TEEAlreadyExists();
        TEEInfo storage tee = _tees[teeId];
        tee.owner = msg.sender;
        tee.paymentAddress = paymentAddress;
        tee.endpoint = endpoint;
        tee.publicKey = publicKey;
        tee.tlsCertificate = tlsCertificate;
        tee.pcrHash = pcrHash;
        tee.teeType = teeType;
        tee.enabled = true;
        tee.registeredAt = block.timestamp;
        tee.lastHeartbeatAt = block.timestamp;
        _byType[teeType].push(teeId);
    }

    function disableTEE(bytes32 teeId) external onlyAdmin {
        _existing(teeId).enabled = false;
    }

    function enableTEE(bytes32 teeId) external onlyAdmin {
        _existing(teeId).enabled = true;
    }

    /// @dev The real registry checks an RSA-PSS signature by the TEE; here the admin stamps it.
    function heartbeat(bytes32 teeId) external onlyAdmin {
        _existing(teeId).lastHeartbeatAt = block.timestamp;
    }

    function getTEE(bytes32 teeId) external view returns (TEEInfo memory) {
        if (_tees[teeId].registeredAt == 0) revert TEENotFound();
        return _tees[teeId];
    }

    function isTEEActive(bytes32 teeId) public view returns (bool) {
        TEEInfo storage tee = _tees[teeId];
        return tee.enabled && approvedPCRs[tee.pcrHash]
            && block.timestamp - tee.lastHeartbeatAt <= heartbeatMaxAge;
    }

    function getActiveTEEs(uint8 teeType) external view returns (TEEInfo[] memory) {
        bytes32[] storage ids = _byType[teeType];
        uint256 count = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            if (isTEEActive(ids[i])) count++;
        }
        TEEInfo[] memory result = new TEEInfo[](count);
        uint256 j = 0;
        for (uint256 i = 0; i < ids.length; i++) {
            if (isTEEActive(ids[i])) result[j++] = _tees[ids[i]];
        }
        return result;
    }

    function _existing(bytes32 teeId) private view returns (TEEInfo storage tee) {
        tee = _tees[teeId];
        if (tee.registeredAt == 0) revert TEENotFound();
    }
}
