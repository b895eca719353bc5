"""Session-wide test set-up for the ``tests`` package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3.manager import RequestManager

from tests.anvil_mined import default_middleware_with_mined_sends


@pytest.fixture(scope="session", autouse=True)
def mined_sends() -> Iterator[None]:
    """Every ``Web3`` built in the test process waits for the receipt of its node-signed sends
    to anvil (``tests/anvil_mined.py`` says why); undone after the session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            RequestManager,
            "get_default_middleware",
            staticmethod(default_middleware_with_mined_sends),
        )
        yield
