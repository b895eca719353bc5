// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

interface IAgentVault {
    function taskUsed(bytes32 taskId) external view returns (bool);
}

/// Test-only: a call target (and, when made the vault's agent, a caller) that looks at the
/// vault from inside an `execute`.
contract Probe {
    error TaskNotMarked(bytes32 taskId);

    /// Calls `target` with `data`, bubbling up any revert unchanged.
    function forward(address target, bytes calldata data) external returns (bytes memory ret) {
        bool ok;
        (ok, ret) = target.call(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    /// Succeeds only if the vault marked `taskId` used before calling out to us.
    function expectMarked(address vault, bytes32 taskId) external view {
        if (!IAgentVault(vault).taskUsed(taskId)) revert TaskNotMarked(taskId);
    }
}
