"""The agent's wait, attacked (red team): nonsense from the caller is an agentguard error."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agentguard import ConfigurationError
from agentguard.pipeline import guarded

from .test_flow import action


@pytest.mark.parametrize("timeout", ["5", Decimal(5), Decimal("NaN"), complex(1, 0)])
def test_a_timeout_that_is_not_a_number_is_a_configuration_error(timeout: Any) -> None:
    """Attack: a tool's arguments (LLM-chosen, JSON) carry ``approval_timeout="5"``. Before the
    fix the flow raised ``TypeError`` (``Decimal("NaN")``: ``decimal.InvalidOperation``, and
    ``Decimal(5)`` passed the range check and failed later as ``float + Decimal``): a
    dependency's exception instead of a typed refusal. Now it is a ``ConfigurationError``
    before anything is held."""
    with pytest.raises(ConfigurationError, match="approval_timeout"):
        next(guarded(action(timeout)))
