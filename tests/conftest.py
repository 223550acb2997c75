"""Shared test set-up: nothing may reach the network; small thread count for a 2-core machine."""
import os

# Set before transformers / datasets / huggingface_hub are imported anywhere in the test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_profile_runs(tmp_path_factory):
    """Every notebook run once in the smoke profile through the batch runner, shared by all the notebook
    tests of the session: ({name: NotebookRun}, results folder)."""
    from layersim import runner as rg

    out = tmp_path_factory.mktemp("smoke-results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread per kernel is fastest on 2 shared cores
        runs = rg.regenerate("smoke", notebooks_dir=rg.default_notebooks_dir(), results_dir=out, progress=False)
    return {r.name: r for r in runs}, out
