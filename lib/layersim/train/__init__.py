"""Training: standard, aligned and multi-exit objectives through one loop, from a laptop CPU to many GPUs.

Command line::

    python -m layersim.train --config vit-fashion-mnist --out runs/vit-aligned --objective aligned
    torchrun --nproc_per_node 4 -m layersim.train --config deit-s-cifar10 --out runs/deit --objective aligned

``--config`` is a recipe shipped with the package (`recipes()`) or a YAML file; every ``--KEY VALUE``
overrides a key of `TrainConfig` (an unknown key or a value of the wrong type exits with status 2).
``--out`` receives config.yaml, log.jsonl, checkpoint.pt and model.pt. Run the same command again after
a crash or a kill and it resumes; a folder holding another config is refused unless ``--overwrite``.

From a notebook::

    from layersim.train import train_cached
    run = train_cached("vit-fashion-mnist", objective="aligned")   # trains once, then reads the cache
    run.layer_acc, run.adapter, run.log

Modules: `config` (TrainConfig, recipes, overrides), `tasks` (data + model behind one interface),
`loop` (the step, the schedule, the loop), `dist` (processes, devices, bf16), `evaluate` (every layer on
the test split), `runs` (the run folder, its log, load_run, train_cached), `checkpoint` (atomic, verified
checkpoints), `cli`.

Log records (log.jsonl, ``run.log``) name each reader by a prefix: ``layer_acc``, ``layer_nll``,
``layer_saturation_hist``, ``layer_early_saturation`` (and ``layer_ppl`` for a vocabulary) for the shared
last-layer classifier at every layer, the same fields under ``exit_`` for a multi-exit model's own heads.
"""
from .checkpoint import CheckpointError
from .cli import main
from .config import KEYS, RUNTIME_KEYS, ConfigError, TrainConfig, identity, identity_hash, recipes, resolve
from .evaluation import evaluate
from .loop import train
from .runs import RunConflictError, TrainResult, load_run, train_cached
from .tasks import Task, build_task, lm_test_sequences

__all__ = ["train", "train_cached", "load_run", "TrainConfig", "TrainResult", "resolve", "recipes", "identity",
           "identity_hash", "evaluate", "build_task", "Task", "main", "ConfigError", "RunConflictError",
           "CheckpointError", "KEYS", "RUNTIME_KEYS", "lm_test_sequences"]
