// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title NewtonOperatorTable
/// @notice agentguard's stand-in for Newton's BN254 certificate verifier on a destination chain
///         (newton-contracts ViewBN254CertificateVerifier / EigenLayer BN254CertificateVerifier):
///         the same view functions the client-side verifier reads, with operator tables the
///         owner writes per operator set and reference timestamp (EigenLayer's operator table
///         updater does this on Base). It is also its own "operator table updater", answering
///         isRootValidByTimestamp. Tests and local networks only: it verifies nothing itself.
contract NewtonOperatorTable {
    struct OperatorSet {
        address avs;
        uint32 id;
    }

    struct G1Point {
        uint256 X;
        uint256 Y;
    }

    struct BN254OperatorSetInfo {
        bytes32 operatorInfoTreeRoot;
        uint256 numOperators;
        G1Point aggregatePubkey;
        uint256[] totalWeights;
    }

    address public owner;

    mapping(bytes32 => mapping(uint32 => BN254OperatorSetInfo)) private _infos;
    mapping(bytes32 => mapping(uint32 => bool)) private _set;
    mapping(bytes32 => uint32) private _latest;
    mapping(bytes32 => uint32) private _maxStaleness;
    mapping(uint32 => bool) private _rootDisabled;

    event TableUpdated(OperatorSet operatorSet, uint32 referenceTimestamp, BN254OperatorSetInfo operatorSetInfo);

    error NotOwner();
    error TableUpdateStale();

    constructor() {
        owner = msg.sender;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    /// @notice EigenLayer's OperatorSetLib.key: avs ‖ uint96(id).
    function _key(OperatorSet memory operatorSet) internal pure returns (bytes32) {
        return bytes32(abi.encodePacked(operatorSet.avs, uint96(operatorSet.id)));
    }

    /// @notice Writes the table for a reference timestamp newer than the latest one (as
    ///         BN254CertificateVerifier.updateOperatorTable requires: a written table never changes).
    function updateOperatorTable(
        OperatorSet calldata operatorSet,
        uint32 referenceTimestamp,
        BN254OperatorSetInfo calldata operatorSetInfo,
        uint32 maxStalenessPeriod
    ) external onlyOwner {
        bytes32 key = _key(operatorSet);
        if (referenceTimestamp <= _latest[key]) revert TableUpdateStale();
        _infos[key][referenceTimestamp] = operatorSetInfo;
        _set[key][referenceTimestamp] = true;
        _latest[key] = referenceTimestamp;
        _maxStaleness[key] = maxStalenessPeriod;
        emit TableUpdated(operatorSet, referenceTimestamp, operatorSetInfo);
    }

    /// @notice OperatorTableUpdater.disableRoot, keyed by reference timestamp.
    function setRootDisabled(uint32 referenceTimestamp, bool disabled) external onlyOwner {
        _rootDisabled[referenceTimestamp] = disabled;
    }

    function getOperatorSetInfo(OperatorSet memory operatorSet, uint32 referenceTimestamp)
        external
        view
        returns (BN254OperatorSetInfo memory)
    {
        return _infos[_key(operatorSet)][referenceTimestamp];
    }

    function isReferenceTimestampSet(OperatorSet memory operatorSet, uint32 referenceTimestamp)
        external
        view
        returns (bool)
    {
        return _set[_key(operatorSet)][referenceTimestamp];
    }

    function latestReferenceTimestamp(OperatorSet memory operatorSet) external view returns (uint32) {
        return _latest[_key(operatorSet)];
    }

    function maxOperatorTableStaleness(OperatorSet memory operatorSet) external view returns (uint32) {
        return _maxStaleness[_key(operatorSet)];
    }

    function getTotalStakeWeights(OperatorSet memory operatorSet, uint32 referenceTimestamp)
        external
        view
        returns (uint256[] memory)
    {
        return _infos[_key(operatorSet)][referenceTimestamp].totalWeights;
    }

    function operatorTableUpdater() external view returns (address) {
        return address(this);
    }

    function isRootValidByTimestamp(uint32 referenceTimestamp) external view returns (bool) {
        return !_rootDisabled[referenceTimestamp];
    }
}
