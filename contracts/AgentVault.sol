// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "./ECDSA.sol";

/// The two EIP-3009 views the vault reads from the token an x402 payment is made in.
interface IEIP3009 {
    function DOMAIN_SEPARATOR() external view returns (bytes32);
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
}

/// @title AgentVault
/// @notice Holds one agent's funds and spends them only on calls that a quorum of policy
///         operators attested, bound to exactly that call (`to`, `value`, `data`, function
///         signature, chain, this vault), once, before expiry. The agent's key alone moves nothing.
/// @dev Attestation and intent hashing follow docs/architecture.md field for field, so the
///      operators' signatures that the SDK verifies offchain are the ones checked here.
///      Deployed as EIP-1167 clones by `AgentVaultFactory`; the implementation locks itself.
contract AgentVault {
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("agentguard");
    bytes32 private constant VERSION_HASH = keccak256("1");
    bytes32 public constant INTENT_TYPEHASH = keccak256(
        "Intent(address from,address to,uint256 value,bytes data,uint256 chainId,bytes functionSignature)"
    );
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(bytes32 taskId,bytes32 policyId,address policyClient,bytes32 intentHash,bool allow,uint64 expiresAt)"
    );
    bytes32 private constant TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 private constant TRANSFER_SIGNATURE_HASH = keccak256("transfer(address,uint256)");
    bytes4 private constant TRANSFER_SELECTOR = bytes4(keccak256("transfer(address,uint256)"));
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;
    bytes4 private constant ERC1271_INVALID = 0xffffffff;
    /// Seen-signer tracking is a 256-bit bitmap over operator slots.
    uint256 public constant MAX_OPERATORS = 256;

    /// An x402 payment as the vault's ERC-1271 signature blob carries it (abi-encoded flat).
    struct Payment {
        address token;
        address payTo;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
        bytes32 taskId;
        bytes32 policyId;
        uint64 expiresAt;
        bytes agentSignature;
        bytes[] operatorSignatures;
    }

    address private _owner;
    address private _agent;
    bytes32 private _policyId;
    uint256 private _threshold;
    bool private _paused;
    bool private _initialized;
    address[] private _operators;
    mapping(address operator => uint256) private _operatorSlot; // index + 1; 0 = not an operator
    mapping(bytes32 taskId => bool) public taskUsed;
    bool private transient _executing;

    event Initialized(address indexed owner, address indexed agent, bytes32 policyId);
    event Executed(bytes32 indexed taskId, address indexed to, uint256 value, bytes32 dataHash);
    event OperatorsSet(address[] operators, uint256 threshold);
    event AgentSet(address indexed agent);
    event PolicyIdSet(bytes32 policyId);
    event Paused(address indexed by);
    event Unpaused(address indexed by);
    event Withdrawn(address indexed token, address indexed to, uint256 amount);

    error AlreadyInitialized();
    error NotOwner(address caller);
    error NotAgent(address caller);
    error ZeroAddress();
    error InvalidPolicyId();
    error InvalidOperator(address operator);
    error InvalidThreshold(uint256 threshold, uint256 operators);
    error VaultPaused();
    error PolicyMismatch(bytes32 expected, bytes32 attested);
    error AttestationExpired(uint64 expiresAt, uint256 timestamp);
    error TaskAlreadyUsed(bytes32 taskId);
    error FunctionSignatureMismatch();
    error Reentrancy();
    /// Signature `index` is not 65 bytes r‖s‖v with v ∈ {27,28} and low s.
    error MalformedSignature(uint256 index);
    /// A signature recovers to `signer`, not an operator: a key outside the set, or a signature
    /// over a different call, chain, vault, policy, task or expiry than the one submitted.
    error UnknownOperator(address signer);
    error DuplicateSignature(address signer);
    error InsufficientQuorum(uint256 valid, uint256 threshold);
    error WithdrawFailed(address token);

    modifier onlyOwner() {
        if (msg.sender != _owner) revert NotOwner(msg.sender);
        _;
    }

    /// The implementation behind every clone can never be initialized (nor used).
    constructor() {
        _initialized = true;
    }

    receive() external payable {}

    function initialize(
        address owner_,
        address agent_,
        address[] calldata operators_,
        uint256 threshold_,
        bytes32 policyId_
    ) external {
        if (_initialized) revert AlreadyInitialized();
        _initialized = true;
        if (owner_ == address(0) || agent_ == address(0)) revert ZeroAddress();
        if (policyId_ == bytes32(0)) revert InvalidPolicyId();
        _owner = owner_;
        _agent = agent_;
        _policyId = policyId_;
        _setOperators(operators_, threshold_);
        emit Initialized(owner_, agent_, policyId_);
    }

    // -- the agent's path -----------------------------------------------------------------

    /// @notice Makes `to.call{value}(data)` if a quorum attested exactly this call.
    /// @return result the target's return data; its revert data is bubbled up unchanged.
    function execute(
        address to,
        uint256 value,
        bytes calldata data,
        bytes calldata functionSignature,
        bytes32 taskId,
        bytes32 policyId_,
        uint64 expiresAt,
        bytes[] calldata signatures
    ) external returns (bytes memory) {
        if (msg.sender != _agent) revert NotAgent(msg.sender);
        if (_executing) revert Reentrancy();
        _requireLive(taskId, policyId_, expiresAt);
        _requireSignatureMatches(data, functionSignature);
        bytes32 attested = intentHash(to, value, data, functionSignature);
        _requireQuorum(attestationDigest(taskId, policyId_, attested, expiresAt), signatures);
        return _call(to, value, data, taskId);
    }

    /// @notice ERC-1271 for x402: valid only for an EIP-3009 `TransferWithAuthorization` from
    ///         this vault that the agent signed and a quorum attested as `token.transfer(payTo,
    ///         value)`, with the authorization nonce equal to the task id (so the token's nonce
    ///         tracking makes the attestation single use).
    ///         Only the token itself may ask (or an offchain read, where the caller is the
    ///         transaction's origin): the digest is rebuilt from `token`'s own DOMAIN_SEPARATOR(),
    ///         so a contract that echoes USDC's domain could otherwise have a payment attested
    ///         in it (and counted in it) move USDC.
    /// @param signature abi.encode(token, payTo, value, validAfter, validBefore, nonce, taskId,
    ///        policyId, expiresAt, agentSignature, operatorSignatures)
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        Payment memory p = _decodePayment(signature);
        if (
            _paused || p.policyId != _policyId || block.timestamp >= p.expiresAt || taskUsed[p.taskId]
                || p.nonce != p.taskId || (msg.sender != p.token && msg.sender != tx.origin)
        ) return ERC1271_INVALID;
        (bool ok, bytes32 digest) = _transferAuthorizationDigest(p);
        if (!ok || digest != hash) return ERC1271_INVALID;
        if (ECDSA.tryRecover(hash, p.agentSignature) != _agent) return ERC1271_INVALID;
        bytes32 paymentIntent = _intentHash(
            p.token, 0, keccak256(abi.encodeWithSelector(TRANSFER_SELECTOR, p.payTo, p.value)), TRANSFER_SIGNATURE_HASH
        );
        bytes32 attested = attestationDigest(p.taskId, p.policyId, paymentIntent, p.expiresAt);
        if (_quorumError(attested, p.operatorSignatures).length != 0) return ERC1271_INVALID;
        return ERC1271_MAGIC;
    }

    // -- hashing (public so the SDK can be pinned against it) -----------------------------

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// EIP-712 hashStruct(Intent) with from = this vault and chainId = this chain.
    function intentHash(address to, uint256 value, bytes calldata data, bytes calldata functionSignature)
        public
        view
        returns (bytes32)
    {
        return _intentHash(to, value, keccak256(data), keccak256(functionSignature));
    }

    /// The digest each operator signs to allow `intentHash_` (allow = true, policyClient = this).
    function attestationDigest(bytes32 taskId, bytes32 policyId_, bytes32 intentHash_, uint64 expiresAt)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(ATTESTATION_TYPEHASH, taskId, policyId_, address(this), intentHash_, true, expiresAt)
        );
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    // -- owner ----------------------------------------------------------------------------

    /// Kill switch: stops `execute` and makes every x402 signature invalid until unpaused.
    function pause() external onlyOwner {
        _paused = true;
        emit Paused(msg.sender);
    }

    function unpause() external onlyOwner {
        _paused = false;
        emit Unpaused(msg.sender);
    }

    /// Rotates the operator set; attestations signed by removed keys stop working at once.
    function setOperators(address[] calldata operators_, uint256 threshold_) external onlyOwner {
        _setOperators(operators_, threshold_);
    }

    function setAgent(address agent_) external onlyOwner {
        if (agent_ == address(0)) revert ZeroAddress();
        _agent = agent_;
        emit AgentSet(agent_);
    }

    function setPolicyId(bytes32 policyId_) external onlyOwner {
        if (policyId_ == bytes32(0)) revert InvalidPolicyId();
        _policyId = policyId_;
        emit PolicyIdSet(policyId_);
    }

    /// Moves funds out without an attestation: `token` = address(0) for ETH. Works while paused.
    function withdraw(address token, address to, uint256 amount) external onlyOwner {
        if (to == address(0)) revert ZeroAddress();
        bool ok;
        bytes memory ret;
        if (token == address(0)) {
            (ok, ret) = to.call{value: amount}("");
        } else {
            if (token.code.length == 0) revert WithdrawFailed(token);
            (ok, ret) = token.call(abi.encodeWithSelector(TRANSFER_SELECTOR, to, amount));
        }
        if (!ok) _bubble(ret);
        if (ret.length != 0 && !abi.decode(ret, (bool))) revert WithdrawFailed(token);
        emit Withdrawn(token, to, amount);
    }

    // -- views ----------------------------------------------------------------------------

    function owner() external view returns (address) {
        return _owner;
    }

    function agent() external view returns (address) {
        return _agent;
    }

    function policyId() external view returns (bytes32) {
        return _policyId;
    }

    function threshold() external view returns (uint256) {
        return _threshold;
    }

    function paused() external view returns (bool) {
        return _paused;
    }

    function operators() external view returns (address[] memory) {
        return _operators;
    }

    function isOperator(address account) external view returns (bool) {
        return _operatorSlot[account] != 0;
    }

    // -- internals ------------------------------------------------------------------------

    function _requireLive(bytes32 taskId, bytes32 policyId_, uint64 expiresAt) private view {
        if (_paused) revert VaultPaused();
        if (policyId_ != _policyId) revert PolicyMismatch(_policyId, policyId_);
        if (block.timestamp >= expiresAt) revert AttestationExpired(expiresAt, block.timestamp);
        if (taskUsed[taskId]) revert TaskAlreadyUsed(taskId);
    }

    function _requireSignatureMatches(bytes calldata data, bytes calldata functionSignature) private pure {
        if (
            data.length == 0
                ? functionSignature.length != 0
                : data.length < 4 || functionSignature.length == 0
                    || bytes4(keccak256(functionSignature)) != bytes4(data)
        ) revert FunctionSignatureMismatch();
    }

    function _requireQuorum(bytes32 digest, bytes[] calldata signatures) private view {
        bytes memory refusal = _quorumError(digest, signatures);
        if (refusal.length != 0) _bubble(refusal);
    }

    /// Marks the task used, then makes the call (the lock also stops re-entry through it).
    function _call(address to, uint256 value, bytes calldata data, bytes32 taskId)
        private
        returns (bytes memory result)
    {
        // A payment attestation is the same intent as this transfer: refuse it if it already
        // settled as an EIP-3009 authorization (whose nonce is the task id).
        if (bytes4(data) == TRANSFER_SELECTOR && _authorizationUsed(to, taskId)) {
            revert TaskAlreadyUsed(taskId);
        }
        taskUsed[taskId] = true;
        _executing = true;
        bool ok;
        (ok, result) = to.call{value: value}(data);
        _executing = false;
        if (!ok) _bubble(result);
        emit Executed(taskId, to, value, keccak256(data));
    }

    function _intentHash(address to, uint256 value, bytes32 dataHash, bytes32 signatureHash)
        private
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(INTENT_TYPEHASH, address(this), to, value, dataHash, block.chainid, signatureHash));
    }

    /// Empty when distinct operators reaching the threshold signed `digest`; otherwise the
    /// revert data saying why not (the first failure).
    function _quorumError(bytes32 digest, bytes[] memory signatures) private view returns (bytes memory) {
        uint256 seen;
        uint256 count;
        for (uint256 i; i < signatures.length; ++i) {
            address signer = ECDSA.tryRecover(digest, signatures[i]);
            if (signer == address(0)) return abi.encodeWithSelector(MalformedSignature.selector, i);
            uint256 slot = _operatorSlot[signer];
            if (slot == 0) return abi.encodeWithSelector(UnknownOperator.selector, signer);
            uint256 bit = 1 << (slot - 1);
            if (seen & bit != 0) return abi.encodeWithSelector(DuplicateSignature.selector, signer);
            seen |= bit;
            ++count;
        }
        if (count < _threshold) return abi.encodeWithSelector(InsufficientQuorum.selector, count, _threshold);
        return "";
    }

    function _setOperators(address[] calldata operators_, uint256 threshold_) private {
        uint256 n = operators_.length;
        if (n > MAX_OPERATORS || threshold_ == 0 || threshold_ > n) revert InvalidThreshold(threshold_, n);
        for (uint256 i; i < _operators.length; ++i) {
            delete _operatorSlot[_operators[i]];
        }
        delete _operators;
        for (uint256 i; i < n; ++i) {
            address op = operators_[i];
            if (op == address(0) || _operatorSlot[op] != 0) revert InvalidOperator(op);
            _operatorSlot[op] = i + 1;
            _operators.push(op);
        }
        _threshold = threshold_;
        emit OperatorsSet(operators_, threshold_);
    }

    function _decodePayment(bytes calldata blob) private pure returns (Payment memory p) {
        // The blob is a flat tuple; prefixing one offset word makes it the encoding of the struct.
        p = abi.decode(bytes.concat(bytes32(uint256(0x20)), blob), (Payment));
    }

    function _transferAuthorizationDigest(Payment memory p) private view returns (bool ok, bytes32 digest) {
        if (p.token.code.length == 0) return (false, bytes32(0));
        bytes memory ret;
        (ok, ret) = p.token.staticcall(abi.encodeCall(IEIP3009.DOMAIN_SEPARATOR, ()));
        if (!ok || ret.length != 32) return (false, bytes32(0));
        bytes32 structHash = keccak256(
            abi.encode(
                TRANSFER_WITH_AUTHORIZATION_TYPEHASH, address(this), p.payTo, p.value, p.validAfter, p.validBefore, p.nonce
            )
        );
        digest = keccak256(abi.encodePacked("\x19\x01", abi.decode(ret, (bytes32)), structHash));
    }

    function _authorizationUsed(address token, bytes32 nonce) private view returns (bool) {
        (bool ok, bytes memory ret) =
            token.staticcall(abi.encodeCall(IEIP3009.authorizationState, (address(this), nonce)));
        return ok && ret.length == 32 && abi.decode(ret, (uint256)) == 1;
    }

    /// Reverts with exactly `reason` (a target's revert data, or an encoded custom error).
    function _bubble(bytes memory reason) private pure {
        assembly ("memory-safe") {
            revert(add(reason, 0x20), mload(reason))
        }
    }
}
