"""Fixtures shared by several test modules."""

import sys
from pathlib import Path

import pytest
import torch

# research/ (the lab scripts behind docs/) is not an installed package: its tests import it from the checkout.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: small models on 2 shared cores run faster without thread spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
