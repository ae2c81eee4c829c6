"""Analysis-tool tests run tiny models: one intra-op thread is faster than several (and much
faster on a CPU shared with other jobs, where extra OpenMP threads only wait for each other)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
