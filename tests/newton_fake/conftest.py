from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.newton_fake.gateway import FakeNewton, fake_newton
from tests.unit.conftest import intent, operators  # noqa: F401 (fixtures)


@pytest.fixture
def newton() -> Iterator[FakeNewton]:
    with fake_newton() as fake:
        yield fake
