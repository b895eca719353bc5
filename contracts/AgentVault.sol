// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "./ECDSA.sol";
import {INewtonAttestationValidator} from "./NewtonBlsValidator.sol";

/// The two EIP-3009 views the vault reads from the token an x402 payment is made in.
interface IEIP3009 {
    function DOMAIN_SEPARATOR() external view returns (bytes32);
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
}

interface IERC20Balance {
    function balanceOf(address account) external view returns (uint256);
}

/// @title AgentVault
/// @notice Holds one agent's funds and spends them only on calls (`execute`) and x402 payments
///         (ERC-1271 `isValidSignature`) that a quorum of policy operators attested, bound to
///         exactly that movement (`to`, `value`, `data`, function signature, chain, this vault),
///         once, before expiry: one rule, `_refusal`, for both paths. The agent's key alone moves
///         nothing. A vault created in Newton mode (`initializeNewton`) instead executes only
///         calls (`executeNewton`) that a validator with Newton's `validateAttestationDirect`
///         verified and allowed; its ECDSA paths then authorize nothing.
/// @dev Attestation and intent hashing follow docs/architecture.md field for field, so the
///      operators' signatures that the SDK verifies offchain are the ones checked here.
///      Deployed as EIP-1167 clones by `AgentVaultFactory`; the implementation locks itself.
///      Upgrades (guardians, a delayed policy switch, two-step ownership, `migrateTo`) are
///      read by no hot path; docs/vault-upgrades.md has the procedures.
contract AgentVault {
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("agentguard");
    bytes32 private constant VERSION_HASH = keccak256("1");
    bytes32 public constant INTENT_TYPEHASH = keccak256(
        "Intent(address from,address to,uint256 value,bytes data,uint256 chainId,bytes functionSignature)"
    );
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(bytes32 taskId,bytes32 policyId,address policyClient,bytes32 intentHash,bool allow,uint64 expiresAt,uint8 tier)"
    );
    bytes32 private constant TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 private constant TRANSFER_SIGNATURE_HASH = keccak256("transfer(address,uint256)");
    bytes4 private constant TRANSFER_SELECTOR = bytes4(keccak256("transfer(address,uint256)"));
    bytes4 private constant ERC1271_MAGIC = 0x1626ba7e;
    bytes4 private constant ERC1271_INVALID = 0xffffffff;
    /// A policy delay above this would let a stolen owner key freeze policy changes for good.
    uint64 public constant MAX_POLICY_DELAY = 30 days;
    /// Seen-signer tracking is a 256-bit bitmap over operator slots.
    uint256 public constant MAX_OPERATORS = 256;
    /// Gas the asset gets to answer `authorizationState`, whatever gas the caller sent, so the
    /// answer (and with it single use) cannot depend on a gas limit the attacker picks; USDC
    /// answers in about 10k. A call with less gas left than this budget is refused.
    uint256 public constant NONCE_QUERY_GAS = 50_000;
    /// Trust tiers (docs/trust-tiers.md): the low two bits are the level (0 standard: the
    /// threshold; 1 high: `highThreshold`; 2 all and 3 human: every operator); bit 4 is
    /// vault-only, which a vault always meets. Tiers above `MAX_TIER` authorize nothing.
    uint8 public constant MAX_TIER = 7;
    /// Newton mode: how long after its signed `initializationTimestamp` a task response is
    /// usable, and how far ahead of this chain's clock that timestamp may be. The block expiry
    /// Newton reports rests on `task.taskCreatedBlock`, which its signature does not cover.
    uint256 public constant NEWTON_MAX_TASK_AGE = 1 hours;
    uint256 public constant NEWTON_MAX_CLOCK_SKEW = 5 minutes;
    /// Base's block time: the signed `expireAfter` (blocks) read as seconds from the signed
    /// `initializationTimestamp`, because `taskCreatedBlock` is not covered by the signature.
    uint256 public constant NEWTON_BLOCK_TIME = 2 seconds;

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
        uint8 tier;
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
    /// Newton mode when nonzero (set once, at creation): the validator `executeNewton` asks.
    address private _newtonValidator;
    // -- upgrades: off the hot path (neither `execute` nor ERC-1271 reads these) -----------
    /// May `pause()` and nothing else (granted and revoked by the owner).
    mapping(address guardian => bool) private _guardians;
    /// Two-step ownership transfer: the named address must accept.
    address private _pendingOwner;
    /// A policy switch scheduled under a nonzero delay, usable from `_policySwitchAt` on.
    bytes32 private _pendingPolicyId;
    uint64 private _policySwitchAt;
    /// Seconds a policy switch waits (0: `setPolicyId` switches at once).
    uint64 private _policyDelay;
    /// A lowered delay, which itself waits the current delay (until `_delayChangeAt`).
    uint64 private _pendingPolicyDelay;
    uint64 private _delayChangeAt;
    // -- trust tiers: read by the hot path only for an attestation above the standard tier --
    /// Signatures tier `high` needs (0: every operator); clamped to threshold..operators.
    uint256 private _highThreshold;
    /// A lowered high threshold, which waits the policy delay (until `_highChangeAt`).
    uint256 private _pendingHighThreshold;
    uint64 private _highChangeAt;

    event Initialized(address indexed owner, address indexed agent, bytes32 policyId);
    event NewtonValidatorSet(address indexed validator);
    /// A Newton attestation was validated and spent with a deny decision: nothing was called.
    event NewtonDenied(bytes32 indexed taskId);
    event Executed(bytes32 indexed taskId, address indexed to, uint256 value, bytes32 dataHash);
    event OperatorsSet(address[] operators, uint256 threshold);
    event AgentSet(address indexed agent);
    event PolicyIdSet(bytes32 policyId);
    event Paused(address indexed by);
    event Unpaused(address indexed by);
    event Withdrawn(address indexed token, address indexed to, uint256 amount);
    event GuardianGranted(address indexed guardian);
    event GuardianRevoked(address indexed guardian);
    event OwnershipTransferStarted(address indexed owner, address indexed pendingOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    /// `setPolicyId` under a nonzero delay: `applyPolicySwitch` may switch from `applyAt` on.
    event PolicySwitchScheduled(bytes32 indexed policyId, uint64 applyAt);
    event PolicySwitchCancelled(bytes32 indexed policyId);
    event PolicyDelaySet(uint64 delay);
    /// A lower delay, which applies (`applyPolicyDelay`) once the current delay has passed.
    event PolicyDelayChangeScheduled(uint64 delay, uint64 applyAt);
    event PolicyDelayChangeCancelled(uint64 delay);
    /// Funds moved to `newVault` (each amount also as `Withdrawn`); this vault is now paused.
    event Migrated(address indexed newVault);
    /// Tier `high` now needs `threshold` signatures (0: every operator).
    event HighThresholdSet(uint256 threshold);
    /// A lower high threshold, which applies (`applyHighThreshold`) once the policy delay passed.
    event HighThresholdChangeScheduled(uint256 threshold, uint64 applyAt);
    event HighThresholdChangeCancelled(uint256 threshold);

    error AlreadyInitialized();
    /// The locked implementation behind the clones: it authorizes nothing.
    error NotInitialized();
    error NotOwner(address caller);
    error NotAgent(address caller);
    error ZeroAddress();
    /// The agent key may be neither the owner nor an operator (nor the owner the vault itself):
    /// otherwise the agent's key alone, or with fewer independent operators, moves funds.
    error AgentNotSeparate(address agent);
    /// Less gas was left than the asset's nonce query is given (`NONCE_QUERY_GAS`).
    error NonceQueryStarved(uint256 gasLeft);
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
    /// The attestation's signed trust tier is above `MAX_TIER`: no rule, so no authorization.
    error UnknownTier(uint8 tier);
    error WithdrawFailed(address token);
    error NotPendingOwner(address caller);
    /// `apply…` with nothing scheduled, or before its time (`applyAt`).
    error NothingScheduled();
    error TooEarly(uint64 applyAt, uint256 timestamp);
    error DelayTooLong(uint64 delay, uint64 max);
    /// `migrateTo`: the new vault differs from this one in `field` (owner, agent, policy,
    /// operators, threshold, validator) or is this vault / has no code.
    error MigrationMismatch(string field);
    /// A migrated token arrived short (a fee-on-transfer or lying token): nothing moved.
    error MigrationShortfall(address token, uint256 sent, uint256 received);
    /// `executeNewton` on a vault created without a Newton validator (or the implementation).
    error NotNewtonMode();
    /// `setOperators` on a Newton-mode vault: its attestations come from its validator only.
    error NewtonMode();
    error InvalidValidator(address validator);
    /// The call asked for differs from the attested intent in `field` (to, value, data,
    /// chainId, or from: the intent's sender must be the agent calling).
    error IntentMismatch(string field);
    /// `block.number` reached the attestation's expiration block (taskCreatedBlock + expireAfter).
    error NewtonAttestationExpired(uint256 expiration, uint256 blockNumber);
    /// The response's signed `initializationTimestamp` (seconds) is too old or too far ahead.
    error NewtonTaskStale(uint256 initializationTimestamp, uint256 timestamp);

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
        _initialize(owner_, agent_, policyId_);
        _setOperators(operators_, threshold_);
    }

    /// Newton mode: attestations are checked by `validator` (Newton's `validateAttestationDirect`
    /// interface), never by an operator set held here.
    function initializeNewton(address owner_, address agent_, address validator, bytes32 policyId_) external {
        _initialize(owner_, agent_, policyId_);
        if (validator.code.length == 0 || validator == agent_ || validator == owner_) {
            revert InvalidValidator(validator);
        }
        _newtonValidator = validator;
        emit NewtonValidatorSet(validator);
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
        bytes[] calldata signatures,
        uint8 tier
    ) external returns (bytes memory) {
        if (msg.sender != _agent) revert NotAgent(msg.sender);
        _requireSignatureMatches(data, functionSignature);
        _requireAttested(to, intentHash(to, value, data, functionSignature), taskId, policyId_, expiresAt, tier, signatures);
        return _call(to, value, data, taskId);
    }

    /// @notice ERC-1271 for x402: valid only when the contract asking (`msg.sender`) is an
    ///         EIP-3009 token and `hash` is its `TransferWithAuthorization` digest moving
    ///         `value` from this vault to `payTo` with `nonce == taskId`, signed by the agent,
    ///         under a quorum attestation of `msg.sender.transfer(payTo, value)` that passes the
    ///         same rule as `execute` (`_refusal`). Any other digest (Permit2, EIP-2612,
    ///         `ReceiveWithAuthorization`, `CancelAuthorization`, another `from`) is invalid.
    /// @param signature abi.encode(token, payTo, value, validAfter, validBefore, nonce, taskId,
    ///        policyId, expiresAt, agentSignature, operatorSignatures, tier); `token` must be the
    ///        caller and `nonce` the task id (both are restated so the blob names what it pays).
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        Payment memory p = _decodePayment(signature);
        address token = msg.sender;
        if (p.token != token || p.nonce != p.taskId) return ERC1271_INVALID;
        // Single use rests on the token's nonce record: pay only in tokens that report it.
        (bool tracked,) = _authorizationState(token, p.taskId);
        if (!tracked) return ERC1271_INVALID;
        (bool ok, bytes32 digest) = _transferAuthorizationDigest(token, p);
        if (!ok || digest != hash) return ERC1271_INVALID;
        if (ECDSA.tryRecover(hash, p.agentSignature) != _agent) return ERC1271_INVALID;
        bytes32 payment = _intentHash(
            token, 0, keccak256(abi.encodeWithSelector(TRANSFER_SELECTOR, p.payTo, p.value)), TRANSFER_SIGNATURE_HASH
        );
        if (_refusal(token, payment, p.taskId, p.policyId, p.expiresAt, p.operatorSignatures, p.tier).length != 0) {
            return ERC1271_INVALID;
        }
        return ERC1271_MAGIC;
    }

    /// @notice Newton mode: makes `to.call{value}(data)` if that is exactly the intent of a task
    ///         response the validator verified and allowed, sent by the agent (`intent.from`),
    ///         for this chain, under the vault's policy id, before the attestation's expiration
    ///         block, once. A deny decision spends the task id and calls nothing (no revert).
    /// @dev Newton's policy-client mixin checks policy id, `intent.from == msg.sender` and the
    ///      chain id; the call itself is bound here (the mixin does not bind it).
    function executeNewton(
        address to,
        uint256 value,
        bytes calldata data,
        INewtonAttestationValidator.Task calldata task,
        INewtonAttestationValidator.TaskResponse calldata taskResponse,
        bytes calldata signatureData
    ) external returns (bytes memory) {
        if (msg.sender != _agent) revert NotAgent(msg.sender);
        address validator = _newtonValidator;
        if (validator == address(0)) revert NotNewtonMode();
        if (_paused) revert VaultPaused();
        if (_executing) revert Reentrancy();
        _requireAttestedCall(to, value, data, taskResponse.intent);
        if (taskResponse.policyId != _policyId) revert PolicyMismatch(_policyId, taskResponse.policyId);
        _requireFresh(task.taskCreatedBlock, taskResponse.policyConfig.expireAfter, taskResponse.initializationTimestamp);
        bytes32 taskId = taskResponse.taskId;
        if (taskUsed[taskId]) revert TaskAlreadyUsed(taskId);
        taskUsed[taskId] = true;
        if (!INewtonAttestationValidator(validator).validateAttestationDirect(task, taskResponse, signatureData)) {
            emit NewtonDenied(taskId);
            return "";
        }
        return _call(to, value, data, taskId);
    }

    /// Newton's `INewtonPolicyClient.getPolicyId`: the validator checks the response against it.
    function getPolicyId() external view returns (bytes32) {
        return _policyId;
    }

    function newtonValidator() external view returns (address) {
        return _newtonValidator;
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

    /// The digest each operator signs to allow `intentHash_` at trust tier `tier` (allow = true,
    /// policyClient = this).
    function attestationDigest(bytes32 taskId, bytes32 policyId_, bytes32 intentHash_, uint64 expiresAt, uint8 tier)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(ATTESTATION_TYPEHASH, taskId, policyId_, address(this), intentHash_, true, expiresAt, tier)
        );
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    // -- owner ----------------------------------------------------------------------------

    /// Kill switch: stops `execute` and makes every x402 signature invalid until unpaused.
    /// The owner or a guardian may pull it; only the owner releases it.
    function pause() external {
        if (msg.sender != _owner && !_guardians[msg.sender]) revert NotOwner(msg.sender);
        _paused = true;
        emit Paused(msg.sender);
    }

    /// `guardian` may `pause()` from now on, and nothing else (a challenger, a monitoring bot).
    function grantGuardian(address guardian) external onlyOwner {
        if (guardian == address(0)) revert ZeroAddress();
        _guardians[guardian] = true;
        emit GuardianGranted(guardian);
    }

    function revokeGuardian(address guardian) external onlyOwner {
        delete _guardians[guardian];
        emit GuardianRevoked(guardian);
    }

    /// Step one of two: `newOwner` becomes owner when it calls `acceptOwnership` (so a typo
    /// cannot lock the vault). `address(0)` cancels. The current owner stays owner until then.
    function transferOwnership(address newOwner) external onlyOwner {
        _pendingOwner = newOwner;
        emit OwnershipTransferStarted(msg.sender, newOwner);
    }

    /// Step two: the pending owner takes over; the same separation rules as at creation hold.
    function acceptOwnership() external {
        address newOwner = _pendingOwner;
        if (msg.sender != newOwner || newOwner == address(0)) revert NotPendingOwner(msg.sender);
        if (newOwner == _agent || newOwner == address(this)) revert AgentNotSeparate(newOwner);
        delete _pendingOwner;
        emit OwnershipTransferred(_owner, newOwner);
        _owner = newOwner;
    }

    function unpause() external onlyOwner {
        _paused = false;
        emit Unpaused(msg.sender);
    }

    /// Rotates the operator set; attestations signed by removed keys stop working at once.
    function setOperators(address[] calldata operators_, uint256 threshold_) external onlyOwner {
        if (_newtonValidator != address(0)) revert NewtonMode();
        _setOperators(operators_, threshold_);
    }

    function setAgent(address agent_) external onlyOwner {
        if (agent_ == address(0)) revert ZeroAddress();
        if (agent_ == _owner || _operatorSlot[agent_] != 0 || agent_ == _newtonValidator) {
            revert AgentNotSeparate(agent_);
        }
        _agent = agent_;
        emit AgentSet(agent_);
    }

    /// Switches the policy at once when `policyDelay` is 0; otherwise schedules the switch
    /// (replacing any scheduled one), for `applyPolicySwitch` once the delay has passed.
    /// Attestations under the old id are accepted until the switch applies, then never.
    function setPolicyId(bytes32 policyId_) external onlyOwner {
        if (policyId_ == bytes32(0)) revert InvalidPolicyId();
        uint64 delay = _policyDelay;
        if (delay == 0) {
            _switchPolicy(policyId_);
            return;
        }
        uint64 applyAt = uint64(block.timestamp) + delay;
        _pendingPolicyId = policyId_;
        _policySwitchAt = applyAt;
        emit PolicySwitchScheduled(policyId_, applyAt);
    }

    function applyPolicySwitch() external onlyOwner {
        bytes32 next = _pendingPolicyId;
        if (next == bytes32(0)) revert NothingScheduled();
        _requireDue(_policySwitchAt);
        _switchPolicy(next);
    }

    function cancelPolicySwitch() external onlyOwner {
        bytes32 next = _pendingPolicyId;
        if (next == bytes32(0)) revert NothingScheduled();
        _clearPolicySwitch();
        emit PolicySwitchCancelled(next);
    }

    /// Raising the delay (or keeping it) applies at once and drops a scheduled lowering;
    /// lowering waits the current delay, so a stolen owner key cannot skip it.
    function setPolicyDelay(uint64 delay) external onlyOwner {
        if (delay > MAX_POLICY_DELAY) revert DelayTooLong(delay, MAX_POLICY_DELAY);
        uint64 current = _policyDelay;
        if (delay >= current) {
            _setPolicyDelay(delay);
            return;
        }
        uint64 applyAt = uint64(block.timestamp) + current;
        _pendingPolicyDelay = delay;
        _delayChangeAt = applyAt;
        emit PolicyDelayChangeScheduled(delay, applyAt);
    }

    function applyPolicyDelay() external onlyOwner {
        uint64 at = _delayChangeAt;
        if (at == 0) revert NothingScheduled();
        _requireDue(at);
        _setPolicyDelay(_pendingPolicyDelay);
    }

    function cancelPolicyDelay() external onlyOwner {
        if (_delayChangeAt == 0) revert NothingScheduled();
        uint64 delay = _pendingPolicyDelay;
        _clearDelayChange();
        emit PolicyDelayChangeCancelled(delay);
    }

    /// Sets how many operators tier `high` needs: `threshold..operators`, or 0 for every
    /// operator (the default). Raising (or keeping) applies at once and drops a scheduled
    /// lowering; lowering loosens, so it waits the policy delay like a policy switch
    /// (`applyHighThreshold` from then on), and a stolen owner key cannot skip it.
    function setHighThreshold(uint256 threshold_) external onlyOwner {
        if (_newtonValidator != address(0)) revert NewtonMode();
        uint256 n = _operators.length;
        if (threshold_ != 0 && (threshold_ < _threshold || threshold_ > n)) {
            revert InvalidThreshold(threshold_, n);
        }
        uint64 delay = _policyDelay;
        if (delay == 0 || _effectiveHigh(threshold_) >= _effectiveHigh(_highThreshold)) {
            _setHighThreshold(threshold_);
            return;
        }
        uint64 applyAt = uint64(block.timestamp) + delay;
        _pendingHighThreshold = threshold_;
        _highChangeAt = applyAt;
        emit HighThresholdChangeScheduled(threshold_, applyAt);
    }

    function applyHighThreshold() external onlyOwner {
        uint64 at = _highChangeAt;
        if (at == 0) revert NothingScheduled();
        _requireDue(at);
        _setHighThreshold(_pendingHighThreshold);
    }

    function cancelHighThreshold() external onlyOwner {
        if (_highChangeAt == 0) revert NothingScheduled();
        uint256 pending = _pendingHighThreshold;
        _clearHighChange();
        emit HighThresholdChangeCancelled(pending);
    }

    /// Moves all ETH and the whole balance of each of `tokens` to `newVault` and pauses this
    /// vault, in one owner transaction. `newVault` must be another vault already set up like
    /// this one: same owner, agent, mode (operators and threshold, or Newton validator), and
    /// the same policy — `policyId = keccak(vault ‖ policyCodeHash ‖ paramsHash ‖
    /// uint256(expireAfter))` holds for both vaults with the preimage given here (a policy id
    /// binds its vault's address, so the ids differ while the policy is the same). Each token
    /// must arrive in full (`MigrationShortfall`). Newton-mode vaults (whose policy ids Newton
    /// issues) are not migrated here: withdraw instead.
    /// @dev The views asked can be faked by a contract made for it: create `newVault` with a
    ///      factory you trust (`agentguard.chain.upgrades.migrate_vault` checks its code).
    function migrateTo(
        address payable newVault,
        address[] calldata tokens,
        bytes32 policyCodeHash,
        bytes32 paramsHash,
        uint256 expireAfter
    ) external onlyOwner {
        if (_executing) revert Reentrancy();
        if (_newtonValidator != address(0)) revert NewtonMode();
        _requireSameVault(AgentVault(newVault), policyCodeHash, paramsHash, expireAfter);
        _paused = true;
        emit Paused(msg.sender);
        for (uint256 i; i < tokens.length; ++i) {
            _migrateToken(tokens[i], newVault);
        }
        uint256 eth = address(this).balance;
        if (eth != 0) _send(address(0), newVault, eth);
        emit Migrated(newVault);
    }

    /// Moves funds out without an attestation: `token` = address(0) for ETH. Works while paused.
    function withdraw(address token, address to, uint256 amount) external onlyOwner {
        if (to == address(0)) revert ZeroAddress();
        _send(token, to, amount);
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

    /// Distinct operator signatures an attestation at trust tier `tier` needs (0 above
    /// `MAX_TIER`: such a tier authorizes nothing).
    function tierThreshold(uint8 tier) public view returns (uint256) {
        if (tier > MAX_TIER) return 0;
        uint8 lvl = tier & 3;
        if (lvl == 0) return _threshold;
        if (lvl == 1) return _effectiveHigh(_highThreshold);
        return _operators.length;
    }

    /// The configured high threshold (0: every operator) and a scheduled lowering (applyAt 0
    /// when none).
    function highThreshold() external view returns (uint256 threshold_, uint256 pending, uint64 applyAt) {
        return (_highThreshold, _pendingHighThreshold, _highChangeAt);
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

    function isGuardian(address account) external view returns (bool) {
        return _guardians[account];
    }

    function pendingOwner() external view returns (address) {
        return _pendingOwner;
    }

    function policyDelay() external view returns (uint64) {
        return _policyDelay;
    }

    /// The scheduled policy switch: (0, 0) when none.
    function pendingPolicySwitch() external view returns (bytes32 policyId_, uint64 applyAt) {
        return (_pendingPolicyId, _policySwitchAt);
    }

    /// The scheduled lowering of the policy delay: applyAt 0 when none.
    function pendingPolicyDelay() external view returns (uint64 delay, uint64 applyAt) {
        return (_pendingPolicyDelay, _delayChangeAt);
    }

    // -- internals ------------------------------------------------------------------------

    function _initialize(address owner_, address agent_, bytes32 policyId_) private {
        if (_initialized) revert AlreadyInitialized();
        _initialized = true;
        if (owner_ == address(0) || agent_ == address(0)) revert ZeroAddress();
        if (owner_ == agent_ || owner_ == address(this)) revert AgentNotSeparate(agent_);
        if (policyId_ == bytes32(0)) revert InvalidPolicyId();
        _owner = owner_;
        _agent = agent_;
        _policyId = policyId_;
        emit Initialized(owner_, agent_, policyId_);
    }

    function _switchPolicy(bytes32 policyId_) private {
        _clearPolicySwitch();
        _policyId = policyId_;
        emit PolicyIdSet(policyId_);
    }

    function _setPolicyDelay(uint64 delay) private {
        _clearDelayChange();
        _policyDelay = delay;
        emit PolicyDelaySet(delay);
    }

    function _setHighThreshold(uint256 threshold_) private {
        _clearHighChange();
        _highThreshold = threshold_;
        emit HighThresholdSet(threshold_);
    }

    function _clearHighChange() private {
        delete _pendingHighThreshold;
        delete _highChangeAt;
    }

    /// Tier `high`'s threshold for a configured value: 0 or more than the operators means every
    /// operator; never below the standard threshold (the operator set may have changed since).
    function _effectiveHigh(uint256 configured) private view returns (uint256) {
        uint256 n = _operators.length;
        if (configured == 0 || configured > n) return n;
        return configured < _threshold ? _threshold : configured;
    }

    function _clearPolicySwitch() private {
        delete _pendingPolicyId;
        delete _policySwitchAt;
    }

    function _clearDelayChange() private {
        delete _pendingPolicyDelay;
        delete _delayChangeAt;
    }

    function _requireDue(uint64 applyAt) private view {
        if (block.timestamp < applyAt) revert TooEarly(applyAt, block.timestamp);
    }

    function _policyIdOf(address vault, bytes32 policyCodeHash, bytes32 paramsHash, uint256 expireAfter)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(vault, policyCodeHash, paramsHash, expireAfter));
    }

    /// `migrateTo`'s checks: `target` is another vault with this one's owner, agent, operators,
    /// threshold and (for its own address) policy.
    function _requireSameVault(AgentVault target, bytes32 policyCodeHash, bytes32 paramsHash, uint256 expireAfter)
        private
        view
    {
        address t = address(target);
        if (t == address(this) || t.code.length == 0) revert MigrationMismatch("vault");
        if (target.owner() != _owner) revert MigrationMismatch("owner");
        if (target.agent() != _agent) revert MigrationMismatch("agent");
        if (
            _policyIdOf(address(this), policyCodeHash, paramsHash, expireAfter) != _policyId
                || _policyIdOf(t, policyCodeHash, paramsHash, expireAfter) != target.policyId()
        ) revert MigrationMismatch("policy");
        if (target.newtonValidator() != address(0)) revert MigrationMismatch("validator");
        if (target.threshold() != _threshold) revert MigrationMismatch("threshold");
        if (keccak256(abi.encode(target.operators())) != keccak256(abi.encode(_operators))) {
            revert MigrationMismatch("operators");
        }
    }

    /// Sends `amount` of `token` (address(0): ETH) to `to`, or reverts saying why not.
    function _send(address token, address to, uint256 amount) private {
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

    /// Sends this vault's whole balance of `token` to `to`; it must arrive in full.
    function _migrateToken(address token, address to) private {
        if (token.code.length == 0) revert WithdrawFailed(token);
        uint256 amount = IERC20Balance(token).balanceOf(address(this));
        if (amount == 0) return;
        uint256 before = IERC20Balance(token).balanceOf(to);
        _send(token, to, amount);
        uint256 received = IERC20Balance(token).balanceOf(to) - before;
        if (received != amount) revert MigrationShortfall(token, amount, received);
    }

    /// The call is the attested intent, from the agent calling, for this chain.
    function _requireAttestedCall(
        address to,
        uint256 value,
        bytes calldata data,
        INewtonAttestationValidator.Intent calldata intent
    ) private view {
        if (intent.from != msg.sender) revert IntentMismatch("from");
        if (intent.chainId != block.chainid) revert IntentMismatch("chainId");
        if (intent.to != to) revert IntentMismatch("to");
        if (intent.value != value) revert IntentMismatch("value");
        if (keccak256(intent.data) != keccak256(data)) revert IntentMismatch("data");
        _requireSignatureMatches(data, intent.functionSignature);
    }

    /// Before the expiration block Newton reports (`taskCreatedBlock + expireAfter`), and within
    /// the signed lifetime (`expireAfter` blocks of `NEWTON_BLOCK_TIME`, at most
    /// `NEWTON_MAX_TASK_AGE`) of the signed `initializationTimestamp` (read as milliseconds when
    /// it is 10^11 or more), which bounds a response whose unsigned `taskCreatedBlock` lies.
    function _requireFresh(uint32 taskCreatedBlock, uint32 expireAfter, uint256 initializationTimestamp)
        private
        view
    {
        uint256 expiration = uint256(taskCreatedBlock) + expireAfter;
        if (block.number >= expiration) revert NewtonAttestationExpired(expiration, block.number);
        uint256 createdAt = initializationTimestamp >= 1e11 ? initializationTimestamp / 1000 : initializationTimestamp;
        uint256 signedLifetime = uint256(expireAfter) * NEWTON_BLOCK_TIME;
        uint256 maxAge = signedLifetime < NEWTON_MAX_TASK_AGE ? signedLifetime : NEWTON_MAX_TASK_AGE;
        if (block.timestamp >= createdAt + maxAge || createdAt > block.timestamp + NEWTON_MAX_CLOCK_SKEW) {
            revert NewtonTaskStale(createdAt, block.timestamp);
        }
    }

    /// THE rule, shared by `execute` and `isValidSignature`: an attestation authorizes exactly
    /// the movement `intentHash_` (an action on `asset`), once. Empty when the vault is live
    /// (initialized, not paused, no attested call in flight), the policy is its own, the attestation has not
    /// expired, its task is unused both here (`taskUsed`, set by `execute`) and on `asset` as
    /// this vault's EIP-3009 authorization nonce (set by the token when a payment settles), and
    /// distinct current operators reaching the threshold signed it; else the revert data saying
    /// why not (the first failure). The threshold is the signed trust tier's (`tierThreshold`).
    function _refusal(
        address asset,
        bytes32 intentHash_,
        bytes32 taskId,
        bytes32 policyId_,
        uint64 expiresAt,
        bytes[] memory signatures,
        uint8 tier
    ) private view returns (bytes memory) {
        // The implementation (never initialized) has no agent and no operators: no quorum.
        if (_threshold == 0) return abi.encodeWithSelector(NotInitialized.selector);
        if (_paused) return abi.encodeWithSelector(VaultPaused.selector);
        if (_executing) return abi.encodeWithSelector(Reentrancy.selector);
        if (policyId_ != _policyId) return abi.encodeWithSelector(PolicyMismatch.selector, _policyId, policyId_);
        if (block.timestamp >= expiresAt) {
            return abi.encodeWithSelector(AttestationExpired.selector, expiresAt, block.timestamp);
        }
        (, bool settled) = _authorizationState(asset, taskId);
        if (taskUsed[taskId] || settled) return abi.encodeWithSelector(TaskAlreadyUsed.selector, taskId);
        if (tier > MAX_TIER) return abi.encodeWithSelector(UnknownTier.selector, tier);
        return _quorumError(
            attestationDigest(taskId, policyId_, intentHash_, expiresAt, tier), signatures, tierThreshold(tier)
        );
    }

    /// `execute`'s use of the rule (a function of its own: `execute` has too many arguments
    /// for the stack to also hold these).
    function _requireAttested(
        address to,
        bytes32 intentHash_,
        bytes32 taskId,
        bytes32 policyId_,
        uint64 expiresAt,
        uint8 tier,
        bytes[] calldata signatures
    ) private view {
        bytes memory refusal = _refusal(to, intentHash_, taskId, policyId_, expiresAt, signatures, tier);
        if (refusal.length != 0) _bubble(refusal);
    }

    function _requireSignatureMatches(bytes calldata data, bytes calldata functionSignature) private pure {
        if (
            data.length == 0
                ? functionSignature.length != 0
                : data.length < 4 || functionSignature.length == 0
                    || bytes4(keccak256(functionSignature)) != bytes4(data)
        ) revert FunctionSignatureMismatch();
    }

    /// Marks the task used, then makes the call (the lock also stops re-entry through it).
    function _call(address to, uint256 value, bytes calldata data, bytes32 taskId)
        private
        returns (bytes memory result)
    {
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
    function _quorumError(bytes32 digest, bytes[] memory signatures, uint256 threshold_)
        private
        view
        returns (bytes memory)
    {
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
        if (count < threshold_) return abi.encodeWithSelector(InsufficientQuorum.selector, count, threshold_);
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
            if (op == _agent) revert AgentNotSeparate(op);
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

    /// `token`'s EIP-3009 `TransferWithAuthorization` digest for `p` from this vault, under the
    /// domain `token` itself declares (so only `token` can be the one asking about it).
    function _transferAuthorizationDigest(address token, Payment memory p) private view returns (bool ok, bytes32 digest) {
        if (token.code.length == 0) return (false, bytes32(0));
        bytes memory ret;
        (ok, ret) = token.staticcall(abi.encodeCall(IEIP3009.DOMAIN_SEPARATOR, ()));
        if (!ok || ret.length != 32) return (false, bytes32(0));
        bytes32 structHash = keccak256(
            abi.encode(
                TRANSFER_WITH_AUTHORIZATION_TYPEHASH, address(this), p.payTo, p.value, p.validAfter, p.validBefore, p.nonce
            )
        );
        digest = keccak256(abi.encodePacked("\x19\x01", abi.decode(ret, (bytes32)), structHash));
    }

    /// `asset`'s EIP-3009 `authorizationState(this vault, nonce)`: `answered` when it returned
    /// exactly one word (any nonzero word counts as `used`, failing closed); no code, a revert,
    /// another size or needing more than `NONCE_QUERY_GAS` is no answer. The asset always gets
    /// that budget in full (else this reverts), so the answer is the same at any gas limit.
    /// Reads one word at most, so no target can bloat the call.
    function _authorizationState(address asset, bytes32 nonce) private view returns (bool answered, bool used) {
        if (asset.code.length == 0) return (false, false);
        bytes memory query = abi.encodeCall(IEIP3009.authorizationState, (address(this), nonce));
        // The call forwards min(budget, 63/64 of what is left after its own cost, ≤ 2600 + memory).
        uint256 left = gasleft();
        if (left < NONCE_QUERY_GAS + NONCE_QUERY_GAS / 63 + 5_000) revert NonceQueryStarved(left);
        uint256 word;
        assembly ("memory-safe") {
            let ok := staticcall(NONCE_QUERY_GAS, asset, add(query, 0x20), mload(query), 0, 0x20)
            answered := and(ok, eq(returndatasize(), 0x20))
            word := mload(0)
        }
        used = answered && word != 0;
    }

    /// Reverts with exactly `reason` (a target's revert data, or an encoded custom error).
    function _bubble(bytes memory reason) private pure {
        assembly ("memory-safe") {
            revert(add(reason, 0x20), mload(reason))
        }
    }
}
