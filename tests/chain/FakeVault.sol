// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

interface IToken {
    function transfer(address to, uint256 amount) external returns (bool);
}

/// Test-only: a contract written to pass `AgentVault.migrateTo`'s checks. It answers every view
/// the old vault asks exactly as a real clone would (same owner, agent, operators, threshold,
/// policy id), yet lets anyone take what it holds. The onchain checks cannot tell it apart;
/// `agentguard.chain.owner.migrate_vault` refuses it by its code.
contract FakeVault {
    address public owner;
    address public agent;
    bytes32 public policyId;
    uint256 public threshold;
    address[] private _operators;

    constructor(address owner_, address agent_, address[] memory operators_, uint256 threshold_, bytes32 policyId_) {
        owner = owner_;
        agent = agent_;
        _operators = operators_;
        threshold = threshold_;
        policyId = policyId_;
    }

    receive() external payable {}

    function operators() external view returns (address[] memory) {
        return _operators;
    }

    function newtonValidator() external pure returns (address) {
        return address(0);
    }

    function drain(address token, address to, uint256 amount) external {
        IToken(token).transfer(to, amount);
    }
}
