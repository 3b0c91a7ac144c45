"""Shared fixtures: every test starts and ends with an empty Pyro param store, since
``ppl.param`` values persist there between models (and EM writes its result back)."""

import os

import pyro
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each, so they do not oversubscribe the cores
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
