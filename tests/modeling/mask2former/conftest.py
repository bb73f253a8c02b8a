"""Fixtures of the Mask2Former tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # The CI machine has 2 cores shared with other jobs; avoid oversubscription.
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)
