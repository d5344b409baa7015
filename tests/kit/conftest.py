import pytest

try:
    import torch
except ImportError:  # the kit's test modules skip themselves without torch
    torch = None


@pytest.fixture(autouse=True)
def _single_thread():
    # the kit's CPU comparisons are bitwise or close to it: one thread keeps the reduction order
    # fixed, and test workers on a small machine do not fight over its cores
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
