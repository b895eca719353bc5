"""Test helpers for code that uses agentguard: prove that nothing was signed.

``SigningSpy`` wraps every signing primitive an agent process has — eth-account's
``sign_transaction`` / ``sign_typed_data`` / ``sign_message`` / ``unsafe_sign_hash`` and the
wallet's own EIP-1559 encoder — and records each call, whatever path led there::

    with SigningSpy() as spy:
        with pytest.raises(PolicyDenied):
            wallet.transfer(stranger, 1, asset=USDC)
    assert spy.calls == []
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from eth_account.signers.local import LocalAccount

import agentguard._signer

__all__ = ["SigningSpy"]

_ACCOUNT_METHODS = ("sign_transaction", "sign_typed_data", "sign_message", "unsafe_sign_hash")


class SigningSpy:
    """Records signatures made in this process while active; restores everything on exit."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._restore: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        calls = self.calls

        def wrapper(*args: Any, **kwargs: Any) -> Any:  # a method too: ``self`` is args[0]
            calls.append(label)
            return original(*args, **kwargs)

        self._restore.append((owner, attribute, original))
        setattr(owner, attribute, wrapper)

    def __enter__(self) -> SigningSpy:
        for name in _ACCOUNT_METHODS:
            self._wrap(LocalAccount, name, name)
        self._wrap(agentguard._signer, "sign_eip1559", "sign_transaction")
        self._wrap(agentguard._signer, "sign_typed_digest", "sign_typed_data")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for owner, attribute, original in reversed(self._restore):
            setattr(owner, attribute, original)
        self._restore.clear()
