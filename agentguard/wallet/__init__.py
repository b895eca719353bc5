"""The guarded wallet: EOA mode (the SDK gates signing) and vault mode (the chain enforces)."""

from agentguard._fees import FeeCap
from agentguard.wallet._wallet import AsyncGuardedWallet, AuditSink, GuardedWallet, Receipt

__all__ = ["AsyncGuardedWallet", "AuditSink", "FeeCap", "GuardedWallet", "Receipt"]
