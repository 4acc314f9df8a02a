import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread(monkeypatch):
    """These tests run thousands of mid-sized operations (per-chunk scan steps, the reference's per-step loop). On a
    loaded 2-core machine two OpenMP threads make each of them wait for a descheduled thread (measured 4–20× slower
    than one thread); results do not depend on the thread count, so use one — also in subprocesses, so that the
    trust_remote_code test's bitwise comparison sees the same summation order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(previous)
