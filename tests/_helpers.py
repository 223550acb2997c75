"""Small helpers shared by test modules (tests/ is on sys.path under pytest: `from _helpers import ...`)."""
import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread (steadier, and two test processes do not fight over 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
