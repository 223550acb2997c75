"""Causal language models through the training loop: packed sequences, a GPT built from a config or a
saved pretrained model, gradient accumulation, max_steps, per-layer next-token accuracy / perplexity /
saturation from chunked readouts (checked against `layersim.lm` on `extract`'s streamed summaries), the
paper recipe's code path on a tiny GPT-2 and a tiny text file, and the bad inputs of issue 11.

Everything is tiny (2 blocks of width 32, a 300-token BPE, 16-32-token sequences) and runs in seconds.
"""
import math
import random
import subprocess
import sys

import pytest
import torch

from layersim import train as T
from layersim.data import train_bpe_tokenizer

WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in trees as children "
         "played near the old house by the river").split()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LAYERSIM_PROGRESS", "off")


@pytest.fixture
def text_file(tmp_path):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) for _ in range(300)]
    path = tmp_path / "text.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny(text_file, **changes):
    cfg = dict(data="text-file", data_root=str(text_file), model="gpt", tokenizer="bpe", vocab_size=300,
               gpt_depth=2, gpt_width=32, gpt_heads=2, seq_len=32, batch_size=8, epochs=2, lr=3e-3,
               warmup=0.1, progress=False, objective="aligned", eval_batch_size=16)
    cfg.update(changes)
    return cfg


def saved_gpt2(folder, text_file, *, n_positions=64, vocab=None):
    """A tiny GPT-2 with a BPE tokenizer, saved like a pretrained model (save_pretrained)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = train_bpe_tokenizer(text_file.read_text().splitlines(), 300, cache_dir=folder.parent / "tok")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab or len(tok), n_positions=n_positions, n_embd=32,
                                       n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---- training and evaluation ------------------------------------------------------------------------------
def test_small_gpt_trains_three_ways_and_evaluation_matches_extract_and_lm_report(tmp_path, text_file):
    from layersim.extract import extract
    from layersim.lm import next_token_report, token_batches

    runs = {obj: T.train(tiny(text_file, objective=obj), tmp_path / obj) for obj in T.config.OBJECTIVES}
    for obj, run in runs.items():
        rec = run.log[-1]
        L = run.adapter.num_layers
        assert L == 2 and len(rec["layer_acc"]) == L and run.info["kind"] == "lm"
        assert rec["train_loss"] < math.log(300)  # learned something beyond a uniform guess
        assert sum(rec["layer_saturation_hist"]) == rec["n_test"]
        assert rec["layer_ppl"] == pytest.approx([math.exp(v) for v in rec["layer_nll"]], rel=1e-9)
        assert (rec.get("exit_acc") is not None) == (obj == "multi_exit")
    # the loop's chunked evaluation == extract's streamed summaries read by layersim.lm (independent path)
    run = T.load_run(tmp_path / "aligned")
    tokens = run.adapter.tokenizer  # the run's own BPE, saved beside the weights
    assert tokens.decode(tokens("the cat sat")["input_ids"]) == "the cat sat"
    from layersim.train.tasks import build_task

    test = run.test_split().inputs  # the run's own test sequences: those the loop evaluated
    assert torch.equal(test, build_task(run.config).test.inputs) and run.modality == "lm" and run.classes == []
    report = next_token_report(extract(run.adapter, token_batches(test, 16), pooling="tokens", progress=False))
    rec = run.log[-1]
    assert report.num_tokens == rec["n_test"]
    assert report.accuracy.tolist() == pytest.approx(rec["layer_acc"], abs=1e-6)
    assert report.perplexity.tolist() == pytest.approx(rec["layer_ppl"], rel=1e-4)
    assert report.saturation.early_fraction == pytest.approx(rec["layer_early_saturation"], abs=1e-9)
    assert report.saturation.histogram.tolist() == rec["layer_saturation_hist"]


def test_gradient_accumulation_gives_the_same_weights(tmp_path, text_file):
    a = T.train(tiny(text_file, epochs=1), tmp_path / "a")
    b = T.train(tiny(text_file, epochs=1, grad_accum=4), tmp_path / "b")
    # equal up to float rounding: Adam turns rounding-level gradient differences of near-zero gradients
    # into steps of up to lr, so a few entries may move by ~lr; almost all agree to 1e-6
    assert a.log[-1]["train_loss"] == pytest.approx(b.log[-1]["train_loss"], rel=1e-5)
    diffs = torch.cat([(p - q).abs().flatten() for p, q in zip(a.model.state_dict().values(),
                                                               b.model.state_dict().values())])
    assert diffs.max() < 3e-3 and (diffs > 1e-5).float().mean() < 1e-3, (diffs.max(), (diffs > 1e-5).float().mean())
    with pytest.raises(T.ConfigError, match="grad_accum=3 cannot cut"):
        T.train(tiny(text_file, grad_accum=3), tmp_path / "c")


def test_max_steps_ends_training_and_evaluates_at_the_end(tmp_path, text_file):
    run = T.train(tiny(text_file, epochs=1, max_steps=5), tmp_path / "a")
    assert [r["step"] for r in run.log] == [5]
    steps_per_epoch = run.info["train_tokens"] // 32 // 8
    assert run.log[-1]["epoch"] == pytest.approx(5 / steps_per_epoch, abs=1e-4)


def test_schedule_factor_matches_transformers_schedulers():
    from transformers import get_scheduler

    from layersim.train.loop import schedule_factor

    for schedule, name in (("cosine", "cosine"), ("linear", "linear"), ("constant", "constant_with_warmup")):
        cfg = T.resolve({"schedule": schedule, "warmup": 0.2})
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        ref = get_scheduler(name, opt, num_warmup_steps=4, num_training_steps=20)
        for step in range(21):
            assert schedule_factor(step, cfg, 20) == pytest.approx(ref.lr_lambdas[0](step), abs=1e-12), (name, step)


# ---- the paper recipe on tiny stand-ins ---------------------------------------------------------------------
def test_gpt2_wikitext103_recipe_has_the_paper_settings_and_runs_on_a_tiny_gpt2(tmp_path, text_file):
    cfg = T.resolve("gpt2-wikitext103")
    assert (cfg.model, cfg.data, cfg.lr, cfg.warmup, cfg.schedule, cfg.seq_len, cfg.max_steps, cfg.grad_clip) == \
        ("gpt2", "wikitext103", 2e-5, 0.1, "linear", 256, 40000, 1.0)
    assert cfg.batch_size == 128 and cfg.batch_size % cfg.grad_accum == 0  # effective batch 128
    model = saved_gpt2(tmp_path / "tiny-gpt2", text_file)
    run = T.train("gpt2-wikitext103", tmp_path / "run", data="text-file", data_root=str(text_file),
                  model=str(model), seq_len=16, batch_size=8, grad_accum=2, max_steps=3, lr=1e-3,
                  eval_batch_size=8, checkpoint_every=2, objective="aligned", progress=False)
    assert run.log[-1]["step"] == 3 and len(run.layer_acc) == 2
    assert not (tmp_path / "run" / "tokenizer").exists()  # the model's own tokenizer: nothing to save
    again = T.load_run(tmp_path / "run")
    assert again.adapter.num_classes == run.adapter.num_classes


# ---- bad input -----------------------------------------------------------------------------------------------
def test_sequence_longer_than_the_context_is_refused(tmp_path, text_file):
    model = saved_gpt2(tmp_path / "short", text_file, n_positions=16)
    with pytest.raises(T.ConfigError, match=r"seq_len=32 exceeds the context of .* \(16 positions\)"):
        T.train(tiny(text_file, model=str(model), tokenizer=""), tmp_path / "run")


def test_tokenizer_and_model_vocabularies_must_match(tmp_path, text_file):
    small = saved_gpt2(tmp_path / "small-vocab", text_file, vocab=100)  # its tokenizer has 300 tokens
    with pytest.raises(ValueError, match="do not belong together"):
        T.train(tiny(text_file, model=str(small), tokenizer=""), tmp_path / "a")
    model = saved_gpt2(tmp_path / "gpt", text_file)
    with pytest.raises(T.ConfigError, match="tokenizer=bpe trains a new vocabulary"):
        T.train(tiny(text_file, model=str(model)), tmp_path / "b")
    with pytest.raises(T.ConfigError, match="model gpt is trained from scratch and has no tokenizer"):
        T.train(tiny(text_file, tokenizer=""), tmp_path / "c")


def test_empty_text_split_is_a_clear_error_through_the_cli(tmp_path):
    one_line = tmp_path / "one.txt"
    one_line.write_text("just one line of text\n\n\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    for path, message in ((one_line, "one.txt has 1 non-empty line(s): a training and a test split need at least 2"),
                          (empty, "empty.txt has 0 non-empty line(s)")):
        proc = subprocess.run([sys.executable, "-m", "layersim.train", "--config", "gpt-english", "--out",
                               str(tmp_path / path.stem), "--data", "text-file", "--data_root", str(path)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
    assert not (tmp_path / "one" / "model.pt").exists()


def test_language_model_keys_are_checked(tmp_path):
    with pytest.raises(T.ConfigError, match="seq_len must be >= 2"):
        T.resolve("gpt-english", {"seq_len": 1})
    with pytest.raises(T.ConfigError, match="vocab_size must be >= 258"):
        T.resolve("gpt-english", {"vocab_size": 100})
    with pytest.raises(T.ConfigError, match="gpt_width 130 is not divisible by gpt_heads 4"):
        T.train("gpt-english", tmp_path / "a", gpt_width=130, data="text-file", data_root=__file__)
    with pytest.raises(T.ConfigError, match="model gpt is a language model"):
        T.train({"data": "digits", "model": "gpt"}, tmp_path / "b")


def test_english_corpus_recipe_code_path(tmp_path):
    """The default profile's recipe on the offline corpus, cut to a few steps."""
    run = T.train("gpt-english", tmp_path / "run", n_train=64, n_test=4, max_steps=2, batch_size=8,
                  objective="multi_exit", progress=False)
    assert run.adapter.num_classes == 2048 and run.adapter.num_layers == 4
    assert run.info["source"] == "english-corpus" and run.log[-1]["n_test"] == 4 * 127
    assert len(run.log[-1]["exit_acc"]) == 4


def test_sampled_aligned_training_is_deterministic_and_a_resumed_run_replays_its_draws(tmp_path, text_file):
    """layer_sampling token draws from (seed, step, micro-batch): a run resumed from a mid-run checkpoint ends with
    the same weights as the run trained straight through, and the draws do change the weights (not the full loss)."""
    cfg = tiny(text_file, gpt_depth=3, epochs=1, max_steps=6, checkpoint_every=3, layer_sampling="token")
    reference = T.train(cfg, tmp_path / "reference")
    out = tmp_path / "resumed"
    T.train(cfg, out)
    (out / "model.pt").unlink()  # back to the checkpoint of step 3, as if killed after it
    (out / "checkpoint.prev.pt").replace(out / "checkpoint.pt")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["global_step"] == 3
    resumed = T.train(cfg, out)
    assert resumed.trained
    for (k, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    full = T.train({**cfg, "layer_sampling": "none"}, tmp_path / "full")
    assert not torch.equal(full.model.state_dict()["lm_head.weight"], reference.model.state_dict()["lm_head.weight"])
    assert set(reference.log[-1]) == set(full.log[-1])  # the same log keys
