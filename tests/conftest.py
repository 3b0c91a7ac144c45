"""Shared fixtures: every test starts and ends with an empty Pyro param store, since
``ppl.param`` values persist there between models (and EM writes its result back)."""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
