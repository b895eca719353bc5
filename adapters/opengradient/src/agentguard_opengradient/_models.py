"""The models OpenGradient's gateway serves, checked before anything is paid.

The gateway checks the model only after the x402 payment middleware has taken the payment
(its model gate runs inside the application the middleware wraps), so an unknown model costs
a signed session maximum and then a 400. The gateway has no models endpoint, so the client
checks against this pinned list, which the user can extend or replace.

Pinned from OpenGradient's own code: the gateway's model lookup
(``tee_gateway/model_registry.py``, OpenGradient/tee-gateway @cb95a5c, 2026-04-28) and the SDK's
``TEE_LLM`` ids (OpenGradient/OpenGradient-SDK @0afa3f3, 2026-07-15). The gateway compares
``model.strip().lower()``; the SDK sends the part of ``"provider/model"`` after the slash.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentguard import ConfigurationError, UnknownModel

__all__ = ["KNOWN_MODELS", "ModelList"]

KNOWN_MODELS: frozenset[str] = frozenset(
    {
        # OpenAI
        "gpt-4.1-2025-04-14", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini",
        "gpt-5", "gpt-5-mini", "gpt-5.2", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.5",
        # Anthropic
        "claude-sonnet-4-5", "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-5",
        "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-4-0",
        "claude-4.0-sonnet",
        # Google
        "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-flash-preview",
        "gemini-3.1-pro-preview", "gemini-3.1-flash-lite-preview", "gemini-3.5-flash",
        # xAI
        "grok-4", "grok-4-fast", "grok-4-1-fast", "grok-4.1-fast", "grok-4-1-fast-non-reasoning",
        "grok-4.20-reasoning", "grok-4.20-non-reasoning", "grok-code-fast-1", "grok-3-mini",
        "grok-3-mini-beta", "grok-3", "grok-3-beta",
    }
)  # fmt: skip


def _normal(model: str) -> str:
    return model.strip().lower()


class ModelList:
    """Which model names the client may pay for: the pinned list (or ``models``, replacing
    it) plus ``extra_models``. Names compare as the gateway compares them."""

    def __init__(
        self, models: Iterable[str] | None = None, extra_models: Iterable[str] = ()
    ) -> None:
        names = list(KNOWN_MODELS if models is None else models) + list(extra_models)
        if isinstance(models, str) or isinstance(extra_models, str):
            raise ConfigurationError("models and extra_models must be lists of model names")
        if not all(isinstance(name, str) and name.strip() for name in names):
            raise ConfigurationError("every model name must be a non-empty string")
        self._names = frozenset(_normal(name) for name in names)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and _normal(model) in self._names

    def check(self, model: str) -> None:
        """Raise ``UnknownModel`` unless the gateway serves ``model`` (the name it is sent)."""
        if model not in self:
            raise UnknownModel(
                f"OpenGradient's gateway does not serve model {model!r} (checked before paying: "
                "the gateway would take the payment first, then refuse it)"
            )
