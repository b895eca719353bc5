// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// Test-only: an ERC-20 that burns 1 % of every transfer, so the recipient gets less than the
/// sender sent (a fee-on-transfer token). `migrateTo` must notice, not report a full move.
contract FeeToken {
    mapping(address => uint256) public balanceOf;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount - amount / 100;
        return true;
    }
}
