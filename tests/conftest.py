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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module that fits several models up front (two shared cores:
    threads only contend); the count is restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
