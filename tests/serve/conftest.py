from __future__ import annotations

import pytest

from lasagna.api import Lasagna


@pytest.fixture(scope="session")
def embedded() -> Lasagna:
    """The embedded ShapeWorld model, loaded once (about a second)."""
    return Lasagna.from_pretrained()
