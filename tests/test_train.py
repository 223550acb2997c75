"""The training loop: config and CLI, determinism, kill-and-resume, torchrun/DDP, checkpoints, bad input,
the notebook cache, and the online recipes' code paths on tiny local stand-ins.

Trainings here are tiny (our ViT of width 16-32 on 8x8 scikit-learn digits) and take a second or two;
the ones that need a real process (SIGKILL, torchrun) run `python -m layersim.train` in a subprocess.
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from layersim import train as T
from layersim.metrics import layerwise_accuracy
from layersim.train.cli import main
from layersim.train.tasks import ImagePipeline, random_crop
from _helpers import one_thread  # noqa: E402

TINY = dict(data="digits", n_train=320, vit_patch=4, vit_depth=2, vit_width=32, vit_heads=2, epochs=3,
            batch_size=32, lr=3e-3, checkpoint_every=4, progress=False, augment="crop+flip", crop_padding=1,
            objective="aligned")
ENV = dict(os.environ, OMP_NUM_THREADS="1", LAYERSIM_PROGRESS="off")


def write_config(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def cli(config: Path, out: Path, *extra, check=True, **kwargs):
    cmd = [sys.executable, "-m", "layersim.train", "--config", str(config), "--out", str(out), *extra]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=check, timeout=300, **kwargs)




def weights(out: Path) -> dict:
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def log_of(out: Path) -> list:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ---- config and command line ---------------------------------------------------------------------------
def test_recipes_resolve_and_overrides_are_typed():
    assert set(T.recipes()) >= {"vit-fashion-mnist", "vit-cifar10", "deit-s-cifar10", "minilm-reviews",
                                "bert-base-glue"}
    for name in T.recipes():
        cfg = T.resolve(name)
        assert cfg.name == name
    cfg = T.resolve("vit-fashion-mnist", {"epochs": "5", "lr": "3e-4", "progress": "false", "objective": "aligned"})
    assert (cfg.epochs, cfg.lr, cfg.progress, cfg.objective) == (5, 3e-4, False, "aligned")
    assert T.resolve({"lr": 1}).lr == 1.0 and isinstance(T.resolve({"lr": 1}).lr, float)
    # the identity leaves out what cannot change the weights
    assert T.identity_hash(cfg) == T.identity_hash(T.resolve(cfg, {"device": "cpu", "checkpoint_every": 7}))
    assert T.identity_hash(cfg) != T.identity_hash(T.resolve(cfg, {"seed": 1}))


@pytest.mark.parametrize("args, message", [
    (["--epochz", "3"], "unknown config key 'epochz'; valid keys: name, data"),
    (["--epochs", "three"], "epochs expects an int, got 'three'"),
    (["--lr", "fast"], "lr expects a float, got 'fast'"),
    (["--progress", "maybe"], "progress expects a bool"),
    (["--objective", "aligend"], "objective must be one of standard, aligned, multi_exit; got 'aligend'"),
    (["--epochs"], "--epochs needs a value"),
    (["--layer_weights", "1,x"], "layer_weights must be"),
])
def test_cli_bad_keys_and_values_exit_2(tmp_path, capsys, args, message):
    assert main(["--config", "vit-fashion-mnist", "--out", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_yaml_with_unknown_key_or_wrong_type_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(T.ConfigError, match="unknown config key 'learning_rate'"):
        T.resolve(bad)
    bad.write_text("epochs: 2.5\n")
    with pytest.raises(T.ConfigError, match=r"epochs expects an int, got 2.5 \(float\)"):
        T.resolve(bad)
    with pytest.raises(T.ConfigError, match="neither a recipe"):
        T.resolve("vit-fashion-mnsit")


# ---- data pipeline -----------------------------------------------------------------------------------------
def test_random_crop_and_global_batch_augmentation_is_independent_of_sharding():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = random_crop(x, torch.tensor([[0, 0], [2, 1]]), padding=1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:4, 0:4]) and torch.equal(out[1], padded[1, :, 2:6, 1:5])
    task = T.build_task(T.resolve(TINY))
    idx = np.arange(8)
    full, labels = task.train_batch(idx, slice(0, 8), (0, 1, 5))
    halves = [task.train_batch(idx, rows, (0, 1, 5))[0] for rows in (slice(0, 4), slice(4, 8))]
    assert torch.equal(torch.cat(halves), full)  # 2 ranks see the same augmented samples as 1
    again, _ = task.train_batch(idx, slice(0, 8), (0, 1, 5))
    other, _ = task.train_batch(idx, slice(0, 8), (0, 1, 6))
    assert torch.equal(again, full) and not torch.equal(other, full)
    plain, _ = task.eval_batch(idx)
    assert plain.shape == full.shape and abs(float(task.pipeline(task.train.take(idx)[0]).mean())) < 1.0


def test_image_pipeline_grey_to_rgb_resize_and_normalise():
    pipe = ImagePipeline(3, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.full((2, 1, 8, 8), 0.75)
    y = pipe(x)
    assert y.shape == (2, 3, 16, 16) and torch.allclose(y, torch.ones_like(y))


# ---- training, evaluation and the saved model ------------------------------------------------------------
def test_train_evaluates_every_layer_and_saved_model_reproduces_it(tmp_path):
    result = T.train(TINY, tmp_path / "run", epochs=2, checkpoint_every=0)
    assert result.trained and len(result.layer_acc) == 2 and len(result.log) == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == [
        "checkpoint.prev.pt", "checkpoint.pt", "config.yaml", "log.jsonl", "model.pt"]
    record = result.log[-1]
    assert record["epoch"] == 2 and record["step"] == 20 and record["objective"] == "aligned"
    # evaluate() against an independent computation: the adapter's readout over the whole test set
    task = T.build_task(result.config)
    images, labels = task.eval_batch(np.arange(len(task.test)))
    with torch.no_grad():
        readout = result.adapter.read(result.adapter.hidden_states(images))  # (L, n, C)
    assert np.allclose(layerwise_accuracy(readout, labels).tolist(), result.layer_acc, atol=1e-9)
    nll = torch.stack([torch.nn.functional.cross_entropy(z, labels) for z in readout])
    assert np.allclose(nll.tolist(), record["layer_nll"], atol=1e-5) and record["test_loss"] == record["layer_nll"][-1]
    from layersim.metrics import saturation_layer

    by_hand = torch.bincount(saturation_layer(readout) - 1, minlength=2)
    assert record["layer_saturation_hist"] == by_hand.tolist()
    assert record["layer_early_saturation"] == pytest.approx(by_hand[0].item() / len(labels))
    assert "layer_ppl" not in record  # perplexity is reported for vocabularies only
    # the folder read back gives the same model and numbers; the ViT file also loads with load_model
    again = T.load_run(tmp_path / "run")
    assert not again.trained and again.layer_acc == result.layer_acc
    # the run hands out the test split it was evaluated on: built once, the same samples in the same order
    split = again.test_split()
    assert split is again.test_split() and again.modality == "image" and again.classes == task.classes
    assert torch.equal(split.inputs, task.test.inputs) and torch.equal(split.labels, task.test.labels)
    assert_same_weights(again.model.state_dict(), result.model.state_dict())
    from layersim.models import load_model

    vit = load_model(tmp_path / "run" / "model.pt")
    assert torch.allclose(vit.logits(images), again.adapter.logits(images), atol=1e-6)
    # the same call again returns the finished run without training
    assert not T.train(TINY, tmp_path / "run", epochs=2, checkpoint_every=0).trained


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = T.train(TINY, tmp_path / "a", epochs=1)
    b = T.train(TINY, tmp_path / "b", epochs=1, checkpoint_every=0, device="cpu")  # runtime keys only
    c = T.train(TINY, tmp_path / "c", epochs=1, seed=1)
    assert_same_weights(a.model.state_dict(), b.model.state_dict())
    assert not torch.equal(a.model.blocks[0].mlp.fc1.weight, c.model.blocks[0].mlp.fc1.weight)


def test_standard_and_multi_exit_runs(tmp_path):
    std = T.train(TINY, tmp_path / "std", epochs=1, objective="standard")
    multi = T.train(TINY, tmp_path / "multi", epochs=1, objective="multi_exit")
    assert multi.exit_acc is not None and len(multi.exit_acc) == 2 and std.exit_acc is None
    assert "exit_acc" in multi.log[-1] and "exit_acc" not in std.log[-1]
    # one prefix per reader, the same fields for each: layer_* (shared head), exit_* (own heads)
    fields = lambda record, prefix: {k[len(prefix):] for k in record if k.startswith(prefix)}  # noqa: E731
    assert fields(multi.log[-1], "layer_") == fields(multi.log[-1], "exit_") == {
        "acc", "nll", "saturation_hist", "early_saturation"}
    assert not fields(std.log[-1], "exit_") and "saturation_hist" not in multi.log[-1]
    assert multi.exit_acc[-1] == multi.layer_acc[-1]  # layer L: the exit head is the model's own head
    assert multi.model.exit_heads is not None and std.model.exit_heads is None
    again = T.load_run(tmp_path / "multi")
    assert_same_weights(again.heads.state_dict(), multi.heads.state_dict())


def test_a_log_written_with_the_old_keys_is_read_under_the_new_names(tmp_path):
    """Runs cached before every reader had its own prefix logged saturation_hist / early_saturation for the
    shared head: load_run (and so train_cached) reads them as layer_saturation_hist / layer_early_saturation."""
    result = T.train(TINY, tmp_path / "run", epochs=1, checkpoint_every=0)
    new = result.log
    old_names = {"layer_saturation_hist": "saturation_hist", "layer_early_saturation": "early_saturation"}
    (tmp_path / "run" / "log.jsonl").write_text(
        "".join(json.dumps({old_names.get(k, k): v for k, v in r.items()}) + "\n" for r in new))
    assert "saturation_hist" in log_of(tmp_path / "run")[-1]  # the file really holds the old names
    again = T.load_run(tmp_path / "run")
    assert again.log == new and list(again.log[-1]) == list(new[-1])  # same values, same names, same order
    cached = T.train_cached(TINY, cache_dir=tmp_path / "cache", epochs=1, checkpoint_every=0)
    old_log = cached.dir / "log.jsonl"
    old_log.write_text(old_log.read_text().replace('"layer_saturation_hist"', '"saturation_hist"')
                       .replace('"layer_early_saturation"', '"early_saturation"'))
    reread = T.train_cached(TINY, cache_dir=tmp_path / "cache", epochs=1, checkpoint_every=0)
    assert not reread.trained and reread.log == cached.log and "saturation_hist" not in reread.log[-1]


def test_schedule_warms_up_then_decays_to_zero(tmp_path):
    result = T.train(TINY, tmp_path / "run", epochs=2, warmup=0.25, schedule="linear", checkpoint_every=0)
    lrs = [r["lr"] for r in result.log]
    # 20 steps: 5 of linear warm-up, then linear decay to 0 at step 20; after epoch 1 (step 10): lr * 10/15
    assert lrs[-1] == 0.0 and lrs[0] == pytest.approx(TINY["lr"] * 10 / 15)


# ---- kill and resume -------------------------------------------------------------------------------------
def _kill_when(cmd, out: Path, ready) -> None:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before the kill (rc {proc.returncode}): {proc.stderr.read()}")
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists(), "the run finished before it was killed: make the config larger"


def _latest_step(out: Path) -> int:
    # a kill between renaming the old checkpoint aside and writing the new one leaves only the previous one
    path = out / "checkpoint.pt" if (out / "checkpoint.pt").exists() else out / "checkpoint.prev.pt"
    return torch.load(path, weights_only=True)["global_step"]


@pytest.mark.parametrize("sampling", ["none", "token"])
def test_sigkill_at_any_point_then_same_command_resumes_to_identical_weights(tmp_path, sampling):
    """Also with the sampled aligned loss: its per-token layer draws are replayed after a kill."""
    config = write_config(tmp_path, epochs=3, layer_sampling=sampling)
    with one_thread():  # as the subprocesses (OMP_NUM_THREADS=1): the same arithmetic, bit for bit
        T.train(TINY, tmp_path / "reference", epochs=3, layer_sampling=sampling)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "layersim.train", "--config", str(config), "--out", str(out)]
    # kill 1: as soon as the first checkpoint is there (step 4 of 30)
    _kill_when(cmd, out, lambda: (out / "checkpoint.pt").exists())
    first = _latest_step(out)
    # kill 2: right after the first evaluation is logged (before or while its checkpoint is written)
    _kill_when(cmd, out, lambda: (out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 1)
    second = _latest_step(out)
    assert 0 < first <= second < 30
    done = cli(config, out)
    assert "test accuracy by layer" in done.stdout
    assert_same_weights(weights(out), weights(tmp_path / "reference"))
    strip = lambda log: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in log]  # noqa: E731
    assert strip(log_of(out)) == strip(log_of(tmp_path / "reference"))  # no duplicated or missing records


# ---- torchrun / DDP --------------------------------------------------------------------------------------
def test_torchrun_two_processes_equal_single_process_and_only_rank0_writes(tmp_path):
    config = write_config(tmp_path, epochs=2, checkpoint_every=0)
    with one_thread():
        T.train(TINY, tmp_path / "single", epochs=2, checkpoint_every=0)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "layersim.train", "--config", str(config), "--out", str(out)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy by layer (shared head)") == 1  # rank 0 reports, rank 1 does not
    single, ddp = weights(tmp_path / "single"), weights(out)
    # the same global batch of 32 split 16 + 16: the gradients agree up to float summation order;
    # after 20 AdamW steps the weights agree to 5e-4 (measured: 4e-5)
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=5e-4, rtol=0), (k, (single[k] - ddp[k]).abs().max())
    log = log_of(out)
    assert len(log) == 2 and all(r["world_size"] == 2 for r in log)  # one writer: no duplicated records
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "checkpoint.prev.pt", "checkpoint.pt", "config.yaml", "log.jsonl", "model.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single", "tiny.yaml"]  # nothing elsewhere
    acc_single = log_of(tmp_path / "single")[-1]["layer_acc"]
    assert np.allclose(log[-1]["layer_acc"], acc_single, atol=2 / log[-1]["n_test"])  # sharded eval, all-reduced


# ---- checkpoints: another config, corrupt files, nothing overwritten ----------------------------------------
def test_folder_of_another_config_is_refused_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    T.train(TINY, out, epochs=1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(T.RunConflictError, match=r"differs in lr: 0.003 -> 0.01.*--overwrite"):
        T.train(TINY, out, epochs=1, lr=0.01)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    config = write_config(tmp_path, epochs=1, lr=0.01)
    assert main(["--config", str(config), "--out", str(out)]) == 1
    assert "already holds something else" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # a foreign, non-empty folder is refused as well
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(T.RunConflictError, match="no config.yaml"):
        T.train(TINY, tmp_path / "mine", epochs=1)
    # --overwrite discards the other run's files and trains the new config
    result = T.train(TINY, out, epochs=1, lr=0.01, overwrite=True)
    assert result.trained and T.resolve(yaml.safe_load((out / "config.yaml").read_text())).lr == 0.01


def test_checkpoint_of_another_config_is_not_loaded(tmp_path):
    T.train(TINY, tmp_path / "a", epochs=1)
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.yaml").write_text(yaml.safe_dump({**TINY, "epochs": 1, "seed": 5}))
    shutil.copy(tmp_path / "a" / "checkpoint.pt", b / "checkpoint.pt")
    with pytest.raises(T.CheckpointError, match=r"b/checkpoint.pt was written by a training run with a different "
                                                r"config \(seed: 0 -> 5\)"):
        T.train(TINY, b, epochs=1, seed=5)


def test_corrupt_checkpoint_falls_back_to_previous_and_still_ends_identical(tmp_path):
    reference = T.train(TINY, tmp_path / "reference", epochs=2)
    out = tmp_path / "run"
    T.train(TINY, out, epochs=2)
    (out / "model.pt").unlink()  # as if killed after the last checkpoint was written
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # truncated
    assert torch.load(out / "checkpoint.prev.pt", weights_only=True)["global_step"] == 16
    with pytest.warns(RuntimeWarning, match=r"checkpoint.pt: unreadable.*resuming from the previous checkpoint"):
        result = T.train(TINY, out, epochs=2)
    assert result.trained and (out / "checkpoint.pt.corrupt").exists()
    assert_same_weights(result.model.state_dict(), reference.model.state_dict())


def test_corrupt_checkpoints_without_a_good_one_are_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    T.train(TINY, out, epochs=1)
    (out / "model.pt").unlink()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        state = torch.load(out / name, weights_only=True)
        key = next(k for k in state["modules"] if k.endswith("fc1.weight"))
        state["modules"][key][0, 0] += 1.0  # a flipped value: loads fine, the hash says corrupt
        torch.save(state, out / name)
    with pytest.raises(T.CheckpointError, match=r"no usable checkpoint.*run/checkpoint.pt: its content does not "
                                                r"match its hash \(corrupt\).*checkpoint.prev.pt"):
        T.train(TINY, out, epochs=1)
    (out / "checkpoint.pt").write_bytes(b"garbage")
    (out / "checkpoint.prev.pt").unlink()
    assert main(["--config", str(write_config(tmp_path, epochs=1)), "--out", str(out)]) == 1
    assert "checkpoint.pt: unreadable" in capsys.readouterr().err


# ---- bad input -------------------------------------------------------------------------------------------
def test_class_count_of_data_and_model_must_match(tmp_path):
    with pytest.raises(T.ConfigError, match="num_classes=5 but digits has 10 classes"):
        T.train(TINY, tmp_path / "a", num_classes=5)
    from layersim.models import VisionTransformer, ViTConfig

    VisionTransformer(ViTConfig(image_size=8, in_chans=1, patch_size=4, depth=2, width=16, heads=2,
                                num_classes=5)).save(tmp_path / "five.pt")
    with pytest.raises(ValueError, match="the model .*five.pt has 5 classes but the data digits has 10"):
        T.train(TINY, tmp_path / "b", model=str(tmp_path / "five.pt"), new_head=False)


def test_bad_combinations_are_clear_errors(tmp_path):
    with pytest.raises(T.ConfigError, match="batch_size 512 is larger than the training set"):
        T.train(TINY, tmp_path / "a", batch_size=512)
    with pytest.raises(T.ConfigError, match="augment='crop' applies to images"):
        T.train({"data": "rotten-tomatoes", "model": "minilm-l6", "augment": "crop"}, tmp_path / "b")
    with pytest.raises(T.ConfigError, match="augment is '' or a"):
        T.resolve(TINY, {"augment": "crop+mixup"})
    with pytest.raises(T.ConfigError, match="warmup is the fraction"):
        T.resolve(TINY, {"warmup": 5})


# ---- the notebook cache ----------------------------------------------------------------------------------
def test_train_cached_trains_once_and_two_processes_share_one_training(tmp_path):
    script = ("import sys, json; from layersim.train import train_cached; "
              f"r = train_cached({dict(TINY, epochs=1)!r}, cache_dir=sys.argv[1]); "
              "print(json.dumps({'trained': r.trained, 'acc': r.layer_acc}))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache")], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sorted(r["trained"] for r in results) == [False, True]  # one trained, the other reused it
    assert results[0]["acc"] == results[1]["acc"]
    runs = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(runs) == 1 and len(log_of(runs[0])) == 1
    again = T.train_cached(dict(TINY, epochs=1), cache_dir=tmp_path / "cache")
    assert not again.trained and again.layer_acc == results[0]["acc"]
    other = T.train_cached(dict(TINY, epochs=1), cache_dir=tmp_path / "cache", seed=3)
    assert other.trained and other.dir != runs[0]


# ---- the online recipes on tiny local stand-ins ------------------------------------------------------------
def _tiny_cifar(root: Path) -> Path:
    from layersim import data

    sub, train_files, test_files, label_key, meta_file, names_key = data._CIFAR["cifar10"]
    folder = root / sub
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in train_files + test_files:
        labels = rng.integers(0, 10, 16)
        imgs = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
        pickle.dump({b"data": imgs.reshape(16, -1), label_key: labels.tolist()}, open(folder / f, "wb"))
    pickle.dump({names_key: [f"class{i}".encode() for i in range(10)]}, open(folder / meta_file, "wb"))
    return root


def _check_run(result, num_layers):
    assert len(result.layer_acc) == num_layers and all(0 <= a <= 1 for a in result.layer_acc)
    again = T.load_run(result.dir)
    task = T.build_task(again.config)
    assert T.evaluate(again.adapter, task, heads=again.heads)["layer_acc"] == pytest.approx(result.layer_acc)


def test_deit_and_vit_cifar10_recipes_on_a_tiny_timm_deit_and_cifar_folder(tmp_path):
    import timm
    from timm.models import save_for_hf

    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=1000)
    save_for_hf(timm.create_model("deit_small_patch16_224", pretrained=False, **args), tmp_path / "deit",
                model_args=args)
    root = _tiny_cifar(tmp_path / "cifar")
    small = dict(data_root=str(root), epochs=1, batch_size=16, n_train=32, n_test=16, progress=False)
    deit = T.train("deit-s-cifar10", tmp_path / "deit-run", model=str(tmp_path / "deit"), image_size=32,
                   objective="multi_exit", **small)
    assert deit.adapter.num_classes == 10 and deit.info["mean"] == [0.485, 0.456, 0.406]  # the model's own
    _check_run(deit, 2)
    vit = T.train("vit-cifar10", tmp_path / "vit-run", vit_depth=2, vit_width=32, vit_heads=2, vit_patch=8,
                  objective="aligned", **small)
    _check_run(vit, 2)


def test_bert_glue_recipe_on_a_saved_tiny_bert_and_glue_copy(tmp_path):
    import datasets
    import transformers
    from transformers import AutoTokenizer

    from layersim.models import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2))
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = lambda n: {"sentence": [f"{'good' if i % 2 else 'bad'} film number {i}" for i in range(n)],  # noqa: E731
                      "label": [i % 2 for i in range(n)]}
    datasets.DatasetDict({s: datasets.Dataset.from_dict(rows(n), features=feats)
                          for s, n in (("train", 32), ("validation", 8))}).save_to_disk(str(tmp_path / "sst2"))
    result = T.train("bert-base-glue", tmp_path / "run", model=str(tmp_path / "bert"),
                     data_root=str(tmp_path / "sst2"), objective="multi_exit", epochs=1, batch_size=8,
                     max_length=16, progress=False)
    assert result.heads is not None
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["exit_heads"] is not None  # fresh heads of a HF model are saved beside its weights
    _check_run(result, 2)


def test_minilm_reviews_recipe_code_path(tmp_path):
    result = T.train("minilm-reviews", tmp_path / "run", n_train=16, n_test=8, batch_size=8, max_length=16,
                     objective="aligned", progress=False)
    assert result.adapter.num_classes == 2 and result.info["classes"] == ["rotten", "fresh"]
    _check_run(result, 6)


# ---- issue 18: a refused start blocks nothing; config values; Ctrl-C, full disk, unusable folders ----------
@pytest.mark.parametrize("key, value", [("lr", "inf"), ("lr", "nan"), ("weight_decay", "nan"),
                                        ("weight_decay", "inf"), ("grad_clip", "nan"), ("vit_mlp_ratio", "inf"),
                                        ("seed", "-1"), ("data_seed", "-1")])
def test_non_finite_and_negative_config_values_are_refused_at_config_check(tmp_path, capsys, key, value):
    with pytest.raises(T.ConfigError, match=f"{key} must be"):
        T.resolve(TINY, {key: value})
    assert main(["--config", str(write_config(tmp_path)), "--out", str(tmp_path / "run"), f"--{key}", value]) == 2
    assert f"{key} must be" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_start_refused_late_leaves_nothing_that_blocks_the_corrected_command(tmp_path, monkeypatch):
    """A start refused after config.yaml was written (here: the data, too small for the batch) left a folder
    that refused the corrected command as 'another run'."""
    with pytest.raises(T.ConfigError, match="batch_size 512 is larger"):
        T.train(TINY, tmp_path / "new", batch_size=512)
    assert not (tmp_path / "new").exists()  # the folder it created is gone
    (tmp_path / "old").mkdir()
    with pytest.raises(T.ConfigError, match="batch_size 512 is larger"):
        T.train(TINY, tmp_path / "old", batch_size=512)
    assert [p.name for p in (tmp_path / "old").iterdir() if p.name != ".lock"] == []  # an existing folder stays
    # a refusal from numpy (as a negative seed was, before the config check) is undone the same way
    import layersim.train.loop as loop

    monkeypatch.setattr(loop, "build_task", lambda cfg: (_ for _ in ()).throw(ValueError("late refusal")))
    with pytest.raises(ValueError, match="late refusal"):
        T.train(TINY, tmp_path / "old", epochs=1, seed=7)
    monkeypatch.undo()
    assert T.train(TINY, tmp_path / "old", epochs=1, checkpoint_every=0).trained  # the corrected command runs


def test_empty_out_and_unusable_folders_are_sentences(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(write_config(tmp_path))
    assert main(["--config", config, "--out", ""]) == 2
    assert "--out must name a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nothing trained into the current folder
    with pytest.raises(ValueError, match="out must name a folder"):
        T.train(TINY, "")
    (tmp_path / "afile").write_text("x")
    assert main(["--config", config, "--out", str(tmp_path / "afile")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["--config", config, "--out", str(tmp_path / "afile" / "run")]) == 1
    assert "cannot be used as a run folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cache_dir .*afile is a file"):
        T.train_cached(TINY, cache_dir=tmp_path / "afile")
    with pytest.raises(ValueError, match="the cache folder .*cannot be used"):
        T.train_cached(TINY, cache_dir=tmp_path / "afile" / "cache")


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                                                "failed writing file data/3: file write failed")])
def test_disk_full_while_checkpointing_is_one_sentence(tmp_path, capsys, monkeypatch, error):
    import layersim.storage as storage

    def full(obj, path):
        Path(path).write_bytes(b"half")
        raise error

    monkeypatch.setattr(storage.torch, "save", full)
    assert main(["--config", str(write_config(tmp_path, epochs=1)), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "no space left on device while writing" in err and "checkpoint.pt" in err and "Traceback" not in err
    assert not [p for p in (tmp_path / "run").glob(".tmp-*")] if (tmp_path / "run").exists() else True


def test_ctrl_c_of_the_training_cli_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    import layersim.train.loop as loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_run", interrupted)
    assert main(["--config", str(write_config(tmp_path, epochs=1)), "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted; run the same command again" in err


def test_config_files_that_are_not_utf8_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes("epochs: 1\nname: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(T.ConfigError, match=f"{bad} is not UTF-8 text"):
        T.resolve(bad)
    assert main(["--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    # a run folder whose config.yaml is not UTF-8 is refused with a sentence, untouched
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_bytes(bad.read_bytes())
    with pytest.raises(T.RunConflictError, match="cannot be read as a training config"):
        T.train(TINY, tmp_path / "run", epochs=1)
