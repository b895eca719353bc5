"""LangChain's standard unit tests for ``ChatOpenGradient`` (``langchain-tests``).

They construct the model without any network: the client below points at a closed loopback
port and is never called. Features the model does not have are declared as such:
image/PDF/audio/video inputs (it sends text only). Tool calling is supported; structured
output is not (no ``with_structured_output`` of its own, and no JSON mode).
"""

from __future__ import annotations

import functools
from typing import Any

from agentguard_opengradient import OpenGradientClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from langchain_agentguard import ChatOpenGradient
from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests

from agentguard import Guard, Ledger, Signer
from agentguard.chain import DEV_ACCOUNTS
from agentguard.x402 import Allowances, X402Auth

NOWHERE = "http://127.0.0.1:9"  # discard port: nothing here answers, nothing is called
OPG = "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB"


@functools.cache
def offline_auth() -> X402Auth:
    """An ``X402Auth`` whose guard and ledger exist but are never asked anything."""
    guard = Guard.connect(
        NOWHERE,
        policy_client="0x00000000000000000000000000000000000A0699",
        operators=[DEV_ACCOUNTS[5].address],
        policy_id="0x" + "11" * 32,
    )
    return X402Auth(
        signer=Signer.from_key(DEV_ACCOUNTS[1].private_key),
        guard=guard,
        ledger=Ledger(),
        allowances=Allowances({OPG: 10**17}),
    )


@functools.cache
def offline_client() -> OpenGradientClient:
    """A verifying client (a fresh enclave key) that is never called."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return OpenGradientClient(NOWHERE, offline_auth(), tee_signing_key=pem)


class TestChatOpenGradientStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatOpenGradient

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"client": offline_client(), "model": "openai/gpt-4.1"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True
