// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @notice Newton's attestation-validation interface, with its structs laid out field for field
///         as newton-contracts declares them (INewtonProverTaskManager.Task / TaskResponse,
///         NewtonMessage.Intent / PolicyTaskData / PolicyData, INewtonPolicy.PolicyConfig), so
///         the ABI and the selector of `validateAttestationDirect` are Newton's own.
interface INewtonAttestationValidator {
    struct Intent {
        address from;
        address to;
        uint256 value;
        bytes data;
        uint256 chainId;
        bytes functionSignature;
    }

    struct Task {
        bytes32 taskId;
        address policyClient;
        uint32 taskCreatedBlock;
        uint32 quorumThresholdPercentage;
        Intent intent;
        bytes intentSignature;
        bytes wasmArgs;
        bytes quorumNumbers;
        uint256 initializationTimestamp;
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

    /// Reverts unless `taskResponse` carries a valid quorum signature and matches `task`; spends
    /// the task id (for the calling policy client) and returns the policy's decision.
    function validateAttestationDirect(
        Task calldata task,
        TaskResponse calldata taskResponse,
        bytes calldata signatureData
    ) external returns (bool);
}

/// The one view of Newton's `INewtonPolicyClient` the validator asks its caller.
interface INewtonPolicyClient {
    function getPolicyId() external view returns (bytes32);
}

/// @title NewtonBlsValidator
/// @notice agentguard's own validator with Newton's `validateAttestationDirect`: it checks a
///         task response the way Newton's direct path does (caller is the policy client, the
///         caller's policy id, task/response consistency, response window, single use whatever
///         the result) and verifies the operators' BLS (BN254) aggregate signature over
///         EigenLayer's certificate digest of Newton's consensus digest
///         (`calculateCertificateDigest(referenceTimestamp, keccak256(abi.encode(taskResponse)))`,
///         what BN254CertificateVerifier checks, so one Newton certificate passes both) with the
///         chain's precompiles, against an operator table it holds, under Newton's quorum rule
///         `total × threshold ≤ 100 × signed`. It returns Newton's `evaluateResult` of the response.
/// @dev `signatureData` is `abi.encode(Certificate)`, laid out as EigenLayer's `BN254Certificate`
///      (which Newton's destination chains verify): the table's `referenceTimestamp`, the signed
///      `messageHash`, the aggregate signature (G1) over
///      `calculateCertificateDigest(referenceTimestamp, messageHash)`, the signers' aggregate key
///      (G2) and one witness per non-signer (its index in the table and its exact table entry).
///      The table is held here, so a witness's Merkle proof is not read (empty or Newton's own:
///      the same certificate verifies here and at an EigenLayer verifier holding the same
///      operators). G2 coordinates use the precompile's order: X[0], Y[0] are the coefficients of i.
///      Written from the definitions in newton-contracts 55696e92 (AttestationValidator,
///      TaskLib, OperatorVerifierLib, NewtonPolicyClient), eigenlayer-contracts 047dc2dc
///      (BN254CertificateVerifier, BN254SignatureVerifier) and eigenlayer-middleware 029cb827
///      (BN254.hashToG1).
contract NewtonBlsValidator is INewtonAttestationValidator {
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

    struct OperatorInfoWitness {
        uint32 operatorIndex;
        bytes operatorInfoProof;
        OperatorInfo operatorInfo;
    }

    struct Certificate {
        uint32 referenceTimestamp;
        bytes32 messageHash;
        G1Point signature;
        G2Point apk;
        OperatorInfoWitness[] nonSignerWitnesses;
    }

    uint256 private constant P = 21888242871839275222246405745257275088696311157297823662689037894645226208583;
    uint256 private constant R = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    /// (P + 1) / 4: a square root mod P is a power by this (P ≡ 3 mod 4).
    uint256 private constant SQRT_EXPONENT = 0xc19139cb84c680a6e14116da060561765e05aa45a1c72a34f082305b61f3f52;
    // −G2, the negated generator of G2, in the precompile's order (imaginary coefficient first).
    uint256 private constant NEG_G2_X_IM = 11559732032986387107991004021392285783925812861821192530917403151452391805634;
    uint256 private constant NEG_G2_X_RE = 10857046999023057135944570762232829481370756359578518086990519993285655852781;
    uint256 private constant NEG_G2_Y_IM = 17805874995975841540914202342111839520379459829704422454583296818431106115052;
    uint256 private constant NEG_G2_Y_RE = 13392588948715843804641432497768002650278120570034223513918757245338268106653;
    /// Gas given to the pairing of two pairs (45 000 + 2 × 34 000 under EIP-1108), as EigenLayer does.
    uint256 private constant PAIRING_GAS = 120_000;
    /// EigenLayer's `BN254CertificateVerifier.BN254_CERTIFICATE_TYPEHASH`.
    bytes32 public constant BN254_CERTIFICATE_TYPEHASH =
        keccak256("BN254Certificate(uint32 referenceTimestamp,bytes32 messageHash)");
    bytes32 private constant POSSESSION_DOMAIN = keccak256("agentguard.NewtonBlsValidator.possession");
    /// Bounds the table (and `setOperators`, which checks a pairing per operator).
    uint256 public constant MAX_OPERATORS = 128;

    address public immutable owner;
    /// The least quorum percentage this validator accepts, whatever a task asks for: Newton's
    /// direct path takes the threshold from the task, which its signature does not cover.
    uint32 public immutable minThresholdPercentage;
    /// A response is usable only while `block.number < task.taskCreatedBlock + this`.
    uint32 public immutable taskResponseWindowBlock;

    /// Identifies the current table; a certificate must name it.
    uint32 public referenceTimestamp;
    uint256 public totalWeight;
    G1Point private _aggregatePubkey;
    /// keccak256(abi.encode(OperatorInfo)) per operator index.
    bytes32[] private _operatorLeaves;
    /// Task ids validated once, whatever the decision: never again (Newton's spent sentinel).
    mapping(bytes32 taskId => bool) public spent;

    event OperatorTableSet(uint32 indexed referenceTimestamp, uint256 operators, uint256 totalWeight);
    event AttestationSpent(bytes32 indexed taskId, address indexed policyClient, bool allow);

    error NotOwner(address caller);
    error InvalidQuorumThresholdPercentage(uint256 threshold);
    error InvalidOperatorTable();
    /// Operator `index` has no weight, no key, a G2 key not matching its G1 key, a repeated key,
    /// or no proof of possession.
    error InvalidOperatorKey(uint256 index);
    error InvalidPolicyClient();
    error InvalidPolicyId();
    error InvalidPolicyAddress();
    error InvalidTaskId();
    error TaskResponseMismatch();
    error TaskCreatedBlockInFuture();
    error TaskResponseTooLate(uint256 blockNumber, uint256 taskCreatedBlock, uint256 taskResponseWindowBlock);
    error AttestationAlreadySpent();
    error AttestationExpired();
    error MalformedSignatureData();
    error StaleCertificate(uint32 referenceTimestamp, uint32 current);
    error CertificateMessageHashMismatch();
    error InvalidOperatorSetQuorums();
    error InvalidOperatorIndex(uint256 index);
    error InsufficientQuorumStake(uint256 signed, uint256 total, uint256 threshold);
    /// The aggregate signature does not verify for the signers' key (or a witness is not the
    /// table's entry, or a point is invalid).
    error VerificationFailed();

    constructor(address owner_, uint32 minThresholdPercentage_, uint32 taskResponseWindowBlock_) {
        if (minThresholdPercentage_ == 0 || minThresholdPercentage_ > 100) {
            revert InvalidQuorumThresholdPercentage(minThresholdPercentage_);
        }
        if (owner_ == address(0) || taskResponseWindowBlock_ == 0) revert InvalidOperatorTable();
        owner = owner_;
        minThresholdPercentage = minThresholdPercentage_;
        taskResponseWindowBlock = taskResponseWindowBlock_;
    }

    // -- the operator table -----------------------------------------------------------------

    /// Replaces the table (certificates for the old one stop verifying). Operator i has G1 key
    /// `pubkeysG1[i]`, the same key in G2 `pubkeysG2[i]`, and `weights[i]`; `possession[i]` is
    /// its BLS signature over `possessionMessage(pubkeysG1[i])`, which proves it holds the key
    /// (so no key is chosen to cancel others in an aggregate: the rogue-key attack).
    function setOperators(
        G1Point[] calldata pubkeysG1,
        G2Point[] calldata pubkeysG2,
        uint256[] calldata weights,
        G1Point[] calldata possession
    ) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        uint256 n = pubkeysG1.length;
        if (n == 0 || n > MAX_OPERATORS || pubkeysG2.length != n || weights.length != n || possession.length != n) {
            revert InvalidOperatorTable();
        }
        delete _operatorLeaves;
        G1Point memory aggregate;
        uint256 total;
        for (uint256 i; i < n; ++i) {
            G1Point memory key = pubkeysG1[i];
            if (weights[i] == 0 || (key.X == 0 && key.Y == 0)) revert InvalidOperatorKey(i);
            for (uint256 j; j < i; ++j) {
                if (pubkeysG1[j].X == key.X && pubkeysG1[j].Y == key.Y) revert InvalidOperatorKey(i);
            }
            if (!_verify(possessionMessage(key), possession[i], key, pubkeysG2[i])) revert InvalidOperatorKey(i);
            uint256[] memory w = new uint256[](1);
            w[0] = weights[i];
            _operatorLeaves.push(keccak256(abi.encode(OperatorInfo(key, w))));
            aggregate = _add(aggregate, key);
            total += weights[i];
        }
        _aggregatePubkey = aggregate;
        totalWeight = total;
        uint32 previous = referenceTimestamp;
        uint32 stamp = uint32(block.timestamp);
        referenceTimestamp = stamp > previous ? stamp : previous + 1;
        emit OperatorTableSet(referenceTimestamp, n, total);
    }

    /// What an operator signs to prove it holds the private key of `pubkey` (for this validator).
    function possessionMessage(G1Point memory pubkey) public view returns (bytes32) {
        return keccak256(abi.encode(POSSESSION_DOMAIN, block.chainid, address(this), pubkey.X, pubkey.Y));
    }

    function operatorCount() external view returns (uint256) {
        return _operatorLeaves.length;
    }

    function aggregatePubkey() external view returns (G1Point memory) {
        return _aggregatePubkey;
    }

    // -- Newton's interface -----------------------------------------------------------------

    /// @inheritdoc INewtonAttestationValidator
    function validateAttestationDirect(
        Task calldata task,
        TaskResponse calldata taskResponse,
        bytes calldata signatureData
    ) external returns (bool allow) {
        address caller = msg.sender;
        if (caller != task.policyClient || caller != taskResponse.policyClient) revert InvalidPolicyClient();
        if (INewtonPolicyClient(caller).getPolicyId() != taskResponse.policyId) revert InvalidPolicyId();
        bytes32 taskId = taskResponse.taskId;
        if (spent[taskId]) revert AttestationAlreadySpent();
        if (task.taskCreatedBlock >= block.number) revert TaskCreatedBlockInFuture();
        _requireConsistent(task, taskResponse);
        if (block.number >= uint256(task.taskCreatedBlock) + taskResponseWindowBlock) {
            revert TaskResponseTooLate(block.number, task.taskCreatedBlock, taskResponseWindowBlock);
        }
        _verifyCertificate(task, taskResponse, signatureData);
        // Newton's direct attestation expires at block.number + expireAfter: 0 is already expired.
        if (taskResponse.policyConfig.expireAfter == 0) revert AttestationExpired();
        spent[taskId] = true;
        allow = evaluateResult(taskResponse.evaluationResult);
        emit AttestationSpent(taskId, caller, allow);
    }

    /// Newton's `TaskLib.computeConsensusDigest`: what the operators sign.
    function consensusDigest(TaskResponse calldata taskResponse) public pure returns (bytes32) {
        return keccak256(abi.encode(taskResponse));
    }

    /// EigenLayer's `BN254CertificateVerifier.calculateCertificateDigest` (same selector): what
    ///         the operators' aggregate signature is over. Like EigenLayer's, it has no chain id
    ///         or verifier address; the table's `referenceTimestamp` and keys bind it.
    function calculateCertificateDigest(uint32 referenceTimestamp_, bytes32 messageHash)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(BN254_CERTIFICATE_TYPEHASH, referenceTimestamp_, messageHash));
    }

    /// Newton's `TaskLib.evaluateResult`: allow only for exactly 32 bytes holding 1 (ABI bool
    /// true) or at least 96 bytes whose second word is 4 and third word is "true" zero-padded
    /// (ABI string "true"; the offset word is not read). Anything else is deny.
    function evaluateResult(bytes calldata result) public pure returns (bool) {
        if (result.length == 32) return uint256(bytes32(result[0:32])) == 1;
        if (result.length >= 96) {
            return uint256(bytes32(result[32:64])) == 4 && bytes32(result[64:96]) == bytes32("true");
        }
        return false;
    }

    /// The decoder `validateAttestationDirect` uses (external so a malformed blob is a typed error).
    function decodeCertificate(bytes calldata signatureData) external pure returns (Certificate memory) {
        return abi.decode(signatureData, (Certificate));
    }

    /// BLS hash-to-curve used by EigenLayer and Newton (try-and-increment from `message mod P`).
    function hashToG1(bytes32 message) public view returns (G1Point memory point) {
        for (uint256 x = uint256(message) % P;; x = addmod(x, 1, P)) {
            uint256 beta = addmod(mulmod(mulmod(x, x, P), x, P), 3, P);
            uint256 y = _expMod(beta, SQRT_EXPONENT);
            if (mulmod(y, y, P) == beta) return G1Point(x, y);
        }
    }

    // -- internals --------------------------------------------------------------------------

    /// Newton's direct-path binding of every Task field the response repeats.
    function _requireConsistent(Task calldata task, TaskResponse calldata taskResponse) private pure {
        if (task.taskId != taskResponse.taskId) revert InvalidTaskId();
        if (
            keccak256(abi.encode(task.intent)) != keccak256(abi.encode(taskResponse.intent))
                || keccak256(task.intentSignature) != keccak256(taskResponse.intentSignature)
                || task.initializationTimestamp != taskResponse.initializationTimestamp
        ) revert TaskResponseMismatch();
        if (taskResponse.policyTaskData.policyId != taskResponse.policyId) revert InvalidPolicyId();
        if (taskResponse.policyTaskData.policyAddress != taskResponse.policyAddress) revert InvalidPolicyAddress();
    }

    /// Newton's destination-chain certificate check against the table held here.
    function _verifyCertificate(Task calldata task, TaskResponse calldata taskResponse, bytes calldata signatureData)
        private
        view
    {
        Certificate memory cert;
        try this.decodeCertificate(signatureData) returns (Certificate memory decoded) {
            cert = decoded;
        } catch {
            revert MalformedSignatureData();
        }
        if (cert.referenceTimestamp != referenceTimestamp) {
            revert StaleCertificate(cert.referenceTimestamp, referenceTimestamp);
        }
        if (cert.messageHash != consensusDigest(taskResponse)) revert CertificateMessageHashMismatch();
        if (task.quorumNumbers.length == 0) revert InvalidOperatorSetQuorums();
        uint256 threshold = task.quorumThresholdPercentage;
        if (threshold == 0 || threshold > 100) revert InvalidQuorumThresholdPercentage(threshold);
        if (threshold < minThresholdPercentage) threshold = minThresholdPercentage;

        uint256 signed = totalWeight;
        G1Point memory nonSigners;
        uint256 next;
        uint256 count = _operatorLeaves.length;
        for (uint256 i; i < cert.nonSignerWitnesses.length; ++i) {
            OperatorInfoWitness memory witness = cert.nonSignerWitnesses[i];
            uint256 index = witness.operatorIndex;
            // strictly increasing: each non-signer once
            if (index < next || index >= count) revert InvalidOperatorIndex(index);
            next = index + 1;
            // the entry must be the table's own; a Merkle proof (Newton's witnesses carry one)
            // is not read, since the table is held here
            if (keccak256(abi.encode(witness.operatorInfo)) != _operatorLeaves[index]) revert VerificationFailed();
            nonSigners = _add(nonSigners, witness.operatorInfo.pubkey);
            signed -= witness.operatorInfo.weights[0];
        }
        if (totalWeight * threshold > 100 * signed) revert InsufficientQuorumStake(signed, totalWeight, threshold);
        G1Point memory signers = _add(_aggregatePubkey, _negate(nonSigners));
        if (signers.X == 0 && signers.Y == 0) revert VerificationFailed();
        bytes32 digest = calculateCertificateDigest(cert.referenceTimestamp, cert.messageHash);
        if (!_verify(digest, cert.signature, signers, cert.apk)) revert VerificationFailed();
    }

    /// e(signature + γ·keyG1, −G2) · e(H(message) + γ·G1, keyG2) == 1 with γ drawn from all
    /// inputs: one pairing checks both that the signature is keyG1's over `message` and that
    /// keyG1 and keyG2 are the same key (EigenLayer's trySignatureAndApkVerification). False
    /// for points the pairing precompile rejects.
    function _verify(bytes32 message, G1Point memory signature, G1Point memory keyG1, G2Point memory keyG2)
        private
        view
        returns (bool)
    {
        uint256 gamma = uint256(
            keccak256(
                abi.encodePacked(
                    message, keyG1.X, keyG1.Y, keyG2.X[0], keyG2.X[1], keyG2.Y[0], keyG2.Y[1], signature.X, signature.Y
                )
            )
        ) % R;
        G1Point memory left = _add(signature, _mul(keyG1, gamma));
        G1Point memory right = _add(hashToG1(message), _mul(G1Point(1, 2), gamma));
        uint256[12] memory input = [
            left.X,
            left.Y,
            NEG_G2_X_IM,
            NEG_G2_X_RE,
            NEG_G2_Y_IM,
            NEG_G2_Y_RE,
            right.X,
            right.Y,
            keyG2.X[0],
            keyG2.X[1],
            keyG2.Y[0],
            keyG2.Y[1]
        ];
        uint256[1] memory out;
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(PAIRING_GAS, 0x08, input, 0x180, out, 0x20)
        }
        return ok && out[0] == 1;
    }

    function _add(G1Point memory a, G1Point memory b) private view returns (G1Point memory r) {
        uint256[4] memory input = [a.X, a.Y, b.X, b.Y];
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(1000, 0x06, input, 0x80, r, 0x40)
        }
        if (!ok) revert VerificationFailed();
    }

    function _mul(G1Point memory p, uint256 scalar) private view returns (G1Point memory r) {
        uint256[3] memory input = [p.X, p.Y, scalar];
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(10000, 0x07, input, 0x60, r, 0x40)
        }
        if (!ok) revert VerificationFailed();
    }

    function _negate(G1Point memory p) private pure returns (G1Point memory) {
        if (p.X == 0 && p.Y == 0) return p;
        return G1Point(p.X, P - (p.Y % P));
    }

    function _expMod(uint256 base, uint256 exponent) private view returns (uint256 result) {
        uint256[6] memory input = [uint256(32), 32, 32, base, exponent, P];
        uint256[1] memory out;
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(gas(), 0x05, input, 0xc0, out, 0x20)
        }
        if (!ok) revert VerificationFailed();
        result = out[0];
    }
}
