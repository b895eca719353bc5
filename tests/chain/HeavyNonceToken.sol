// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4);
}

/// Test-only: an honest EIP-3009 token (USDC's domain and order of checks: nonce unused, ask the
/// wallet, mark, move) whose `authorizationState` view is expensive. It always answers truly,
/// given enough gas; with too little it runs out, which a caller that forwards whatever gas it
/// has left cannot tell from "this asset keeps no nonces".
contract HeavyNonceToken {
    bytes32 private constant TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    uint256 public immutable rounds;
    mapping(address account => uint256) public balanceOf;
    mapping(address authorizer => mapping(bytes32 nonce => bool)) private _used;

    constructor(address holder, uint256 amount, uint256 rounds_) {
        balanceOf[holder] = amount;
        rounds = rounds_;
    }

    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("USD Coin"),
                keccak256("2"),
                block.chainid,
                address(this)
            )
        );
    }

    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool) {
        bytes32 acc = nonce;
        for (uint256 i; i < rounds; ++i) {
            acc = keccak256(abi.encode(acc));
        }
        return _used[authorizer][nonce] || acc == bytes32(0);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external {
        require(block.timestamp > validAfter && block.timestamp < validBefore, "window");
        require(!_used[from][nonce], "used");
        bytes32 digest = keccak256(
            abi.encodePacked(
                "\x19\x01",
                DOMAIN_SEPARATOR(),
                keccak256(abi.encode(TYPEHASH, from, to, value, validAfter, validBefore, nonce))
            )
        );
        (bool ok, bytes memory ret) = from.staticcall(abi.encodeCall(IERC1271.isValidSignature, (digest, signature)));
        require(ok && ret.length == 32 && bytes4(ret) == IERC1271.isValidSignature.selector, "signature");
        _used[from][nonce] = true;
        _move(from, to, value);
    }

    function _move(address from, address to, uint256 value) private {
        require(balanceOf[from] >= value, "balance");
        balanceOf[from] -= value;
        balanceOf[to] += value;
    }
}
