"""Every public way to a signature goes through the one pipeline.

1. Statically: the agent's ``Signer`` is called from exactly two places, the ``sign`` methods
   of the pipeline's two ports (``ChainPort``, ``PaymentPort``); the other signing calls in
   the code base sign with keys that are not the agent's (listed, with why).
2. The public surface is enumerated: each public method/function of an entry point is either
   listed as leading to a signature (and named with the test that traces it through the
   pipeline with ``PipelineTrace``) or listed as not signing. A new public method fails this
   test until someone decides which it is.
3. The tracer itself catches a signature made around the pipeline.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from agentguard_opengradient import OpenGradientClient

from agentguard import AsyncGuard, Guard, Signer, TransactionIntent
from agentguard.wallet import AsyncGuardedWallet, GuardedWallet
from agentguard.x402 import X402Auth
from agentguard.x402.official_hook import AsyncAuthorizationHook, AuthorizationHook

from .pipeline_trace import PipelineTrace
from .test_pipeline_core import PAYEE, TOKEN, verified_for

ROOT = Path(__file__).resolve().parents[2]
SIGNER_METHODS = {"sign_transaction", "sign_payment", "sign_eip3009", "sign_vault_payment"}
PRIMITIVES = {"sign_eip1559", "sign_typed_digest", "sign_typed_data", "unsafe_sign_hash"}

# (file, enclosing function) → why it may sign
ALLOWED_CALLS = {
    ("agentguard/wallet/_chain.py", "sign"): "ChainPort.sign: the pipeline's Sign step",
    ("agentguard/x402/_payment.py", "sign"): "PaymentPort.sign: the pipeline's Sign step",
    ("agentguard/_signer.py", "sign_transaction"): "the Signer's own primitive",
    ("agentguard/_signer.py", "sign_payment"): "the Signer's own primitive",
    ("agentguard/_signer.py", "sign_eip3009"): "the Signer's own primitive",
    ("agentguard/_signer.py", "sign_vault_payment"): "the Signer's own primitive",
    ("agentguard/_signer.py", "_transaction"): "the Signer's own primitive (after its ticket)",
    ("agentguard/_signer.py", "_payment"): "the Signer's own primitive (after its ticket)",
    ("agentguard/_signer.py", "_eip3009"): "the Signer's own primitive (after its ticket)",
    ("agentguard/_signer.py", "_vault_payment"): "the Signer's own primitive (after its ticket)",
    ("agentguard/chain/contracts.py", "transact"): "dev-chain helper: a caller's dev account",
    (
        "adapters/opengradient/src/agentguard_opengradient/server.py",
        "settle",
    ): "the payee's facilitator (server side), not the agent",
}


def _calls() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    files = [*ROOT.glob("agentguard/**/*.py"), *ROOT.glob("adapters/opengradient/src/**/*.py")]
    for path in files:
        rel = str(path.relative_to(ROOT))
        if rel == "agentguard/testing.py":  # the spy wraps the primitives
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call):
                    name = (
                        node.func.attr
                        if isinstance(node.func, ast.Attribute)
                        else getattr(node.func, "id", "")
                    )
                    if name in SIGNER_METHODS | PRIMITIVES:
                        found.add((rel, func.name))
    return found


def test_only_the_pipelines_ports_call_the_agents_signer() -> None:
    found = _calls()
    assert found <= set(ALLOWED_CALLS), sorted(found - set(ALLOWED_CALLS))
    port_calls = {c for c in found if c[1] == "sign"}
    assert port_calls == {
        ("agentguard/wallet/_chain.py", "sign"),
        ("agentguard/x402/_payment.py", "sign"),
    }


# entry point → (public names that can lead to a signature, the test tracing them) and the
# public names that cannot.
WALLET = "tests/wallet/test_entry_points.py"
X402 = "tests/x402/test_entry_points.py"
OG = "adapters/opengradient/tests/test_og_entry_points.py"
ACTIONS = "tests/actions/test_intent_form.py"
# ``run_call`` (and ``action`` without ``wallet=``) walk the pipeline with a port that signs
# nothing (the call is the send; tests/actions/test_run_call.py traces it); ``action`` with
# ``wallet=`` signs through the wallet.
SURFACE: dict[object, tuple[dict[str, str], set[str]]] = {
    GuardedWallet: (
        {"transfer": WALLET, "call": WALLET, "send": WALLET},
        {"recover", "mode", "account", "chain_id"},
    ),
    AsyncGuardedWallet: (
        {"transfer": WALLET, "call": WALLET, "send": WALLET},
        {"recover", "account", "on", "chain_id"},
    ),
    Guard: (
        {"wallet": WALLET, "x402": X402, "action": ACTIONS},
        {"authorize", "close", "connect", "flush", "run_call", "from_env"},
    ),
    AsyncGuard: (
        {"wallet": WALLET, "x402": X402, "action": ACTIONS},
        {"authorize", "aclose", "connect", "flush", "run_call", "from_env"},
    ),
    X402Auth: (
        {"sync_auth_flow": X402, "async_auth_flow": X402, "auth_flow": X402},
        {
            "client",
            "async_client",
            "close",
            "aclose",
            "unanswered",
            "sessions",
        },
    ),
    AuthorizationHook: ({"__call__": X402}, set()),
    AsyncAuthorizationHook: ({"__call__": X402}, set()),
    OpenGradientClient: (
        {
            "chat": OG,
            "completion": OG,
            "achat": OG,
            "acompletion": OG,
            "stream_chat": OG,
            "astream_chat": OG,
        },
        {"close", "aclose", "verifies_proofs"},
    ),
}


def _public(cls: type) -> set[str]:
    names = {n for n in dir(cls) if not n.startswith("_")}
    names |= {"__call__"} if "__call__" in vars(cls) else set()
    inherited = set()
    for base in cls.__mro__[1:]:
        if base.__module__.startswith(("httpx", "builtins")):
            inherited |= {n for n in dir(base) if not n.startswith("_")}
    keep = {"auth_flow", "sync_auth_flow", "async_auth_flow"} if cls is X402Auth else set()
    return (names - inherited) | (names & keep)


@pytest.mark.parametrize("cls", list(SURFACE), ids=lambda c: c.__name__)
def test_every_public_name_is_classified(cls: type) -> None:
    signing, not_signing = SURFACE[cls]
    assert _public(cls) == set(signing) | not_signing
    for test_file in signing.values():
        assert (ROOT / test_file).is_file()


def test_the_module_level_entry_points_are_covered() -> None:
    from agentguard_opengradient import ensure_permit2_approval

    from agentguard.x402.official_hook import authorization_hook

    for func, test_file in ((authorization_hook, X402), (ensure_permit2_approval, OG)):
        assert inspect.isfunction(func)
        assert func.__name__ in (ROOT / test_file).read_text()


def test_the_tracer_catches_a_signature_around_the_pipeline() -> None:
    signer = Signer.from_key("0x" + "a1" * 32)
    intent = TransactionIntent.erc20_transfer(
        sender=signer.address, token=TOKEN, recipient=PAYEE, amount=5, chain_id=8453
    )
    verified = verified_for(intent)
    with PipelineTrace() as trace:
        signer.sign_transaction(
            verified, nonce=0, gas=60_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=1
        )
    with pytest.raises(AssertionError):
        trace.assert_signed_by_pipeline(1)
