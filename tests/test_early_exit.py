"""layersim.early_exit: per-layer statistics, exit policies, FLOPs, real early exit, parameter savings."""
import math
import time

import pytest
import torch
import transformers

from layersim.early_exit import (ConfidenceExit, EntropyExit, FixedExit, FlopsProfile, LayerSummaries,
                                 PatienceExit, calibration, choose_by_accuracy_drop, count_flops, early_exit,
                                 exit_at_layer, final_prediction_prob, generate_at_layer,
                                 minimal_depth, overthinking, paired_speedup, parameter_savings, pareto_front,
                                 per_layer_logits, saturation, savings_table, simulate, summarize, sweep,
                                 sweep_policies)
from layersim.metrics import layerwise_accuracy
from layersim.models import ExitHeads, VisionTransformer, ViTConfig, adapt, timm_kwargs


# ---- helpers --------------------------------------------------------------------------------------------
def binary_logits(confidences) -> torch.Tensor:
    """(L, n) probabilities of class 1 -> (L, n, 2) logits with exactly those softmax probabilities."""
    p = torch.as_tensor(confidences, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=-1)


def onehot_logits(preds, num_classes=3, margin=5.0) -> torch.Tensor:
    """(L, n) integer predictions -> (L, n, C) logits whose argmax is `preds`."""
    preds = torch.as_tensor(preds)
    return margin * torch.nn.functional.one_hot(preds, num_classes).double()


TINY = ViTConfig(image_size=8, patch_size=4, depth=3, width=16, heads=2, num_classes=3)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return VisionTransformer(TINY).eval()


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=32, num_labels=3, max_position_embeddings=32)
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def text_batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 60, (6, 9), generator=gen)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[3, 3:] = 0  # padded rows: the attention mask must travel with the samples
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def timm_vit():
    import timm

    torch.manual_seed(0)
    return timm.models.VisionTransformer(**timm_kwargs(TINY)).eval()


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.3)
    return transformers.GPT2LMHeadModel(config).eval()


def images(n=12, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---- saturation, accuracy, probability of the final prediction ------------------------------------------
def test_saturation_on_hand_made_prediction_sequences():
    preds = torch.tensor([[0, 1, 2, 1],   # layer 1
                          [0, 0, 2, 2],   # layer 2
                          [0, 1, 1, 0],   # layer 3
                          [0, 1, 2, 1]])  # layer 4 (final)
    # sample 0: all layers agree -> 1; sample 1: 1,0,1,1 -> 3; sample 2: 2,2,1,2 -> only the last -> 4;
    # sample 3: 1,2,0,1 -> 4
    stats = saturation(preds)
    assert stats.layers.tolist() == [1, 3, 4, 4]
    assert stats.histogram.tolist() == [1, 0, 1, 2]
    assert stats.early_fraction == 0.5
    none_early = saturation(torch.tensor([[1, 1], [0, 0]]))   # every sample changes at the last layer
    assert none_early.layers.tolist() == [2, 2] and none_early.early_fraction == 0.0
    all_early = saturation(torch.tensor([[3, 4], [3, 4], [3, 4]]))
    assert all_early.layers.tolist() == [1, 1] and all_early.histogram.tolist() == [2, 0, 0]
    assert all_early.early_fraction == 1.0


def test_saturation_with_tied_logits_takes_the_first_maximum():
    # layer 1 ties classes 0 and 1 (argmax picks 0, the final answer); layer 2 ties 1 and 2 (picks 1)
    logits = torch.tensor([[[2.0, 2.0, 0.0]], [[0.0, 1.0, 1.0]], [[5.0, 0.0, 0.0]]])
    assert saturation(logits).layers.tolist() == [3]
    logits[1, 0] = torch.tensor([1.0, 1.0, 1.0])  # a full tie picks class 0 too
    assert saturation(logits).layers.tolist() == [1]


def test_final_prediction_prob_and_summaries():
    logits = binary_logits([[0.2, 0.7], [0.9, 0.4]])  # final predictions: class 1 and class 0
    prob = final_prediction_prob(logits)
    assert torch.allclose(prob, torch.tensor([[0.2, 0.3], [0.9, 0.6]], dtype=prob.dtype), atol=1e-6)
    s = summarize(logits)
    assert s.preds.tolist() == [[0, 1], [1, 0]]
    assert torch.allclose(s.confidence, torch.tensor([[0.8, 0.7], [0.9, 0.6]], dtype=s.confidence.dtype), atol=1e-6)
    p = torch.tensor(0.8)
    assert math.isclose(float(s.entropy[0, 0]), float(-(p * p.log() + (1 - p) * (1 - p).log())), rel_tol=1e-6)


def test_statistics_from_argmax_and_top1_summaries_equal_those_from_logits():
    torch.manual_seed(3)
    logits = torch.randn(4, 50, 5) * 3
    labels = torch.randint(0, 5, (50,))
    full = summarize(logits)

    class Extraction:  # what layersim.extract keeps for a vocabulary: no logits
        preds = full.preds
        final_prob = full.final_prob
        topk_probs = torch.stack([full.confidence, full.confidence / 2], dim=-1)
        logits = None

    assert torch.equal(saturation(Extraction()).layers, saturation(logits).layers)
    assert torch.allclose(calibration(Extraction(), labels).ece, calibration(logits, labels).ece)
    assert torch.equal(final_prediction_prob(Extraction()), full.final_prob)
    assert simulate(ConfidenceExit(0.7), Extraction(), labels).exit_layer.tolist() == \
        simulate(ConfidenceExit(0.7), logits, labels).exit_layer.tolist()
    with pytest.raises(ValueError, match="entropy needs the full distribution"):
        simulate(EntropyExit(0.5), Extraction(), labels)


# ---- overthinking, minimal depth, calibration ------------------------------------------------------------
def test_overthinking_on_hand_made_sequences():
    labels = torch.tensor([0, 1, 2, 0])
    preds = torch.tensor([[0, 0, 2, 1],    # layer 1
                          [0, 1, 1, 1],    # layer 2
                          [1, 1, 1, 1],    # layer 3
                          [0, 1, 1, 1]])   # layer 4
    # sample 0: right at 1, 2, 4 -> first 1; sample 1: first 2; sample 2: right at 1 only, wrong at 4
    # (overthinking); sample 3: never right
    out = overthinking(preds, labels)
    assert out.first_correct.tolist() == [1, 2, 1, 0]
    assert out.final_accuracy == 0.5 and out.oracle_accuracy == 0.75
    assert out.overthinking_fraction == 0.25
    # wasted: (4-1) + (4-2) + (4-1) + 0 = 8 of 4 samples x 4 layers
    assert math.isclose(out.wasted_fraction, 8 / 16)
    # with FLOPs-like cumulative costs: embedding 2, then 1 per block -> cost(l) = 2 + l
    cost = [3.0, 4.0, 5.0, 6.0]
    assert math.isclose(overthinking(preds, labels, layer_cost=cost).wasted_fraction, (3 + 2 + 3) / (4 * 6))


def test_minimal_depth():
    assert minimal_depth([0.5, 0.8, 0.9, 0.9], 0.99) == 3
    assert minimal_depth([0.5, 0.8, 0.9, 0.9], 0.5) == 1
    assert minimal_depth([0.5, 0.95, 0.9, 0.9], 1.0) == 2  # the first layer at or above the last
    preds = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 1, 2]])
    assert minimal_depth(preds, 1.0, labels=torch.tensor([0, 1, 2])) == 3
    assert minimal_depth(preds, 0.6, labels=torch.tensor([0, 1, 2])) == 2


def test_calibration_by_hand():
    # one layer, four samples: two at confidence 0.9 (one right), two at 0.6 (both right)
    logits = binary_logits([[0.9, 0.9, 0.6, 0.6]])
    labels = torch.tensor([1, 0, 1, 1])
    cal = calibration(logits, labels, num_bins=10)
    assert math.isclose(float(cal.ece[0]), 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6), rel_tol=1e-6)
    assert cal.bin_count[0].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    assert math.isclose(float(cal.bin_accuracy[0, 8]), 0.5) and math.isclose(float(cal.bin_confidence[0, 5]), 0.6)
    assert torch.isnan(cal.bin_accuracy[0, 0])
    # a perfectly calibrated layer: confidence 1 and always right
    assert float(calibration(onehot_logits([[0, 1]], margin=80.0), torch.tensor([0, 1])).ece[0]) < 1e-12


# ---- exit policies ----------------------------------------------------------------------------------------
def synthetic():
    """4 layers, 4 samples: sample i is unsure (0.55) until layer i+1, then sure (0.95) of class 1; labels 1
    except sample 3, whose layers 1-3 say class 0 (confidence 0.55 of class 0)."""
    conf = torch.full((4, 4), 0.55)
    for i in range(4):
        conf[i:, i] = 0.95
    conf[:3, 3] = 0.45  # sample 3: class 0 (probability 0.55) until layer 4
    return binary_logits(conf), torch.tensor([1, 1, 1, 1])


def test_sweeps_on_synthetic_logits_with_known_answers():
    logits, labels = synthetic()
    table = sweep(logits, labels, "confidence", [0.5, 0.9, 0.99])
    assert table["expected_depth"].tolist() == [1.0, 2.5, 4.0]
    assert table["accuracy"].tolist() == [0.75, 1.0, 1.0]  # at 0.5 sample 3 exits at layer 1 with class 0
    fixed = sweep(logits, labels, "fixed")
    assert fixed["expected_depth"].tolist() == [1, 2, 3, 4]
    assert fixed["accuracy"].tolist() == layerwise_accuracy(logits, labels).tolist()
    # entropy is a decreasing function of the confidence for two classes: same exits
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))
    entropy = sweep(logits, labels, "entropy", [h(0.5) + 1e-9, h(0.9)])
    assert entropy["expected_depth"].tolist() == [1.0, 2.5]
    # patience: the predictions are 1111 for samples 0-2 and 0001 for sample 3, which patience 1 and 2
    # let go (wrongly) at layers 2 and 3 before it changes its mind
    patience = sweep(logits, labels, "patience", [1, 2, 3])
    assert patience["expected_depth"].tolist() == [2.0, 3.0, 4.0]
    assert patience["accuracy"].tolist() == [0.75, 0.75, 1.0]
    assert table.attrs["full_accuracy"] == 1.0


def test_patience_counts_consecutive_unchanged_predictions():
    preds = torch.tensor([[0, 1, 2], [1, 1, 2], [1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]])  # L=6, n=3
    out = simulate(PatienceExit(2), preds)
    # sample 0: 0,1,1,1 -> unchanged twice at layer 4; sample 1: 1,1,1 -> layer 3;
    # sample 2: 2,2,0,0,0 -> counter 1 at layer 2, reset at 3, 2 at layer 5
    assert out.exit_layer.tolist() == [4, 3, 5]
    assert out.preds.tolist() == [1, 1, 0]


@pytest.mark.parametrize("policy", [ConfidenceExit(0.9), EntropyExit(0.4), PatienceExit(1), PatienceExit(2),
                                    FixedExit(2), ConfidenceExit(0.5)])
def test_policies_never_read_a_layer_past_the_exit(policy):
    logits, labels = synthetic()
    clean = simulate(policy, logits, labels)
    poisoned = logits.clone()
    for i, layer in enumerate(clean.exit_layer.tolist()):
        poisoned[layer:, i] = float("nan")  # every layer after sample i's exit
    result = simulate(policy, poisoned, labels)
    assert result.exit_layer.tolist() == clean.exit_layer.tolist()
    assert result.preds.tolist() == clean.preds.tolist() and result.accuracy == clean.accuracy
    # and poisoning a layer the policy does read is noticed (the test can fail): refused, never a silent number
    if policy.reads_every_layer and clean.exit_layer.max() > 1:
        early = logits.clone()
        early[0] = float("nan")
        with pytest.raises(ValueError, match="NaN or infinite"):
            simulate(policy, early, labels)


def test_pareto_front_and_choice_by_accuracy_drop():
    import pandas as pd

    table = pd.DataFrame({"policy": list("abcde"), "parameter": range(5),
                          "accuracy": [0.70, 0.80, 0.75, 0.90, 0.90],
                          "expected_depth": [1.0, 2.0, 2.5, 3.0, 4.0]})
    front = pareto_front(table)
    assert front["policy"].tolist() == ["a", "b", "d"]  # c is beaten by b, e by d
    table.attrs["full_accuracy"] = 0.905
    assert choose_by_accuracy_drop(table, 0.01)["policy"] == "d"
    assert choose_by_accuracy_drop(table, 0.2)["policy"] == "b"  # a (0.70) is just below 0.705
    assert choose_by_accuracy_drop(table, 0.21)["policy"] == "a"
    with pytest.raises(ValueError, match="no row reaches"):
        choose_by_accuracy_drop(table, 0.0)


def test_sweep_of_all_policies_with_flops(vit):
    x = images(40)
    logits = per_layer_logits(vit, x)
    labels = logits[-1].argmax(-1)  # the full model is "right" by construction
    flops = count_flops(vit, x[:4])
    table = sweep_policies(logits, labels, flops=flops, num_points=9)
    assert set(table["policy"]) == {"confidence", "entropy", "patience", "fixed"}
    fixed = table[table["policy"] == "fixed"]
    costs = flops.layer_costs(every_layer=False).tolist()
    assert fixed["expected_flops"].tolist() == pytest.approx(costs)
    assert fixed["relative_flops"].iloc[-1] == pytest.approx(1.0)
    assert fixed["accuracy"].iloc[-1] == 1.0
    front = pareto_front(table, cost="expected_flops")
    assert front["accuracy"].is_monotonic_increasing and front["expected_flops"].is_monotonic_increasing
    # the cheapest exit has the full model's accuracy when every sample is already decided at layer 1
    assert front["accuracy"].iloc[-1] == 1.0


# ---- FLOPs ------------------------------------------------------------------------------------------------
def test_flops_of_one_block_equal_the_count_by_hand(vit):
    B, T, d, heads, hidden, C = 2, 1 + 4, 16, 2, 64, 3
    profile = count_flops(vit, images(B))
    # FlopCounterMode counts 2 m k n per product: qkv, QK^T, (softmax)V, projection, fc1, fc2
    qkv = 2 * B * T * d * (3 * d)                        # 15,360
    attention = 2 * (2 * B * heads * T * T * (d // heads))  # 3,200
    proj = 2 * B * T * d * d                             # 5,120
    mlp = 2 * (2 * B * T * d * hidden)                   # 40,960
    assert qkv + attention + proj + mlp == 64_640
    assert profile.blocks == [64_640] * 3
    assert profile.embed == 2 * B * 4 * d * (1 * 4 * 4)  # patch projection: 4 patches of 4x4 pixels
    assert profile.heads == [2 * B * d * C] * 3          # the norm is element-wise: head only
    assert profile.batch_size == B
    table = profile.table()
    assert table[table["part"] == "block"]["flops"].tolist() == [64_640 / B] * 3


@pytest.mark.parametrize("name", ["vit", "timm_vit", "bert", "gpt2"])
def test_flops_by_part_add_up_to_the_whole_model(name, request, text_batch):
    from layersim.early_exit import flop_counter

    model = request.getfixturevalue(name)
    batch = images(3) if "vit" in name else ({"input_ids": text_batch["input_ids"][:, :5] % 50} if name == "gpt2"
                                             else text_batch)
    profile = count_flops(model, batch)
    with flop_counter() as counter, torch.no_grad():
        model(batch) if "vit" in name else model(**batch)
    head = profile.heads[-1]
    if name == "gpt2":  # the samples are the 6 x 4 positions with a next token; the model reads all 6 x 5
        assert profile.batch_size == 24 and head == 2 * 24 * 16 * 50
        head = head * 30 // 24
    assert counter.get_total_flops() == profile.embed + sum(profile.blocks) + head
    assert min(profile.blocks) > 0


def test_flops_profile_exit_costs():
    profile = FlopsProfile(embed=10, blocks=[4, 4, 4], heads=[2, 2, 2], batch_size=2)
    assert profile.layer_costs(every_layer=True).tolist() == [8.0, 11.0, 14.0]   # (10 + 4l + 2l) / 2
    assert profile.layer_costs(every_layer=False).tolist() == [8.0, 10.0, 12.0]  # (10 + 4l + 2) / 2
    assert profile.full_cost() == 12.0
    logits, labels = synthetic()
    result = simulate(FixedExit(2), logits[:3], labels, flops=profile)
    assert result.expected_flops == 10.0
    with pytest.raises(ValueError, match="1..3"):
        profile.exit_cost(torch.tensor([4]))


# ---- real early exit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit", "timm_vit", "bert"])
def test_truncated_forward_logits_equal_the_full_readout(name, request, text_batch):
    model = request.getfixturevalue(name)
    adapter = adapt(model)
    batch = images(5) if "vit" in name else text_batch
    full = per_layer_logits(adapter, batch)
    with torch.no_grad():
        hidden = adapter.hidden_states(batch)
        assert torch.allclose(full, adapter.read(hidden), atol=1e-6)
        own = model(batch) if "vit" in name else model(**batch).logits
    assert torch.allclose(full[-1], own, atol=1e-5)
    for layer in range(1, adapter.num_layers + 1):
        assert torch.allclose(exit_at_layer(adapter, batch, layer), full[layer - 1], atol=1e-6)


@pytest.mark.parametrize("name", ["vit", "timm_vit", "bert"])
def test_block_by_block_matches_the_models_hidden_states_and_select_keeps_samples(name, request, text_batch):
    model = request.getfixturevalue(name)
    adapter = adapt(model)
    batch = images(5) if "vit" in name else text_batch
    with torch.no_grad():
        if name == "bert":  # the model's own hidden states, not the adapter's
            reference = model.bert(**text_batch, output_hidden_states=True).hidden_states[1:]
        else:
            reference = adapter.hidden_states(batch).states
        state = adapter.begin(batch)
        assert state.layer == 0
        for layer in range(1, adapter.num_layers + 1):
            state = adapter.run_blocks(state, layer)
            assert torch.allclose(state.tokens, reference[layer - 1], atol=1e-5)
        keep = torch.tensor([1, 3])  # padded rows for text: their mask goes with them
        state = adapter.run_blocks(adapter.begin(batch), 1).select(keep)
        state = adapter.run_blocks(state, adapter.num_layers)
    assert state.index.tolist() == [1, 3]
    assert torch.allclose(state.tokens, reference[-1][keep], atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "timm_vit", "bert"])
def test_per_sample_early_exit_equals_the_simulation_on_cached_logits(name, request, text_batch):
    model = request.getfixturevalue(name)
    batch = images(16) if "vit" in name else text_batch
    logits = per_layer_logits(model, batch)
    threshold = float(summarize(logits).confidence[:-1].median())  # some samples exit early, some do not
    for policy in (ConfidenceExit(threshold), PatienceExit(1), FixedExit(2)):
        real = early_exit(model, batch, policy)
        cached = simulate(policy, logits)
        assert real.exit_layer.tolist() == cached.exit_layer.tolist()
        assert real.preds.tolist() == cached.preds.tolist()
        rows = torch.arange(len(real.exit_layer))
        assert torch.allclose(real.logits, logits[real.exit_layer - 1, rows], atol=1e-5)
    spread = early_exit(model, batch, ConfidenceExit(threshold)).exit_layer
    assert spread.min() == 1 and spread.max() > 1  # the samples did leave at different layers


def test_multi_exit_heads_drive_early_exit_and_a_model_without_exits_refuses(vit):
    torch.manual_seed(1)
    multi = VisionTransformer(ViTConfig(**{**TINY.__dict__, "multi_exit": True})).eval()
    x = images(10)
    adapter = adapt(multi)
    heads = ExitHeads.for_adapter(adapter)
    logits = per_layer_logits(multi, x, reader=heads)
    with torch.no_grad():
        cls = multi.norm(adapter.pool(adapter.hidden_states(x), "cls"))  # by hand: each layer's own head
        by_hand = torch.stack([h(c) for h, c in zip(list(multi.exit_heads) + [multi.head], cls)])
        assert torch.allclose(logits, by_hand, atol=1e-6)
        assert not torch.allclose(logits[0], per_layer_logits(multi, x)[0])  # not the shared head
    real = early_exit(multi, x, ConfidenceExit(0.34), reader=heads)
    assert real.exit_layer.tolist() == simulate(ConfidenceExit(0.34), logits).exit_layer.tolist()
    other = adapt(vit)  # heads made for another model are refused
    for call in (lambda: per_layer_logits(other, x, reader=heads), lambda: early_exit(other, x, FixedExit(1), reader=heads)):
        with pytest.raises(ValueError, match="made for"):
            call()
    with pytest.raises(TypeError, match="a reader must be None"):
        per_layer_logits(multi, x, reader="own")


def test_generation_at_the_last_layer_is_the_models_greedy_generation(gpt2):
    prompt = torch.tensor([[5, 17, 33]])
    for stop_at_eos in (True, False):  # this model emits its EOS (0) after 4 tokens
        ours = generate_at_layer(gpt2, prompt, 3, max_new_tokens=8, stop_at_eos=stop_at_eos)
        theirs = gpt2.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                               **({} if stop_at_eos else {"eos_token_id": None}))
        assert torch.equal(ours["ids"], theirs)
    # at layer 1 every token is lm_head(ln_f(h_1)) of the last position, recomputed from the full forward
    adapter = adapt(gpt2)
    early = generate_at_layer(gpt2, prompt, 1, max_new_tokens=4, stop_at_eos=False)
    ids = prompt
    with torch.no_grad():
        for _ in range(4):
            h = adapter.hidden_states({"input_ids": ids}).states[0, :, -1]
            ids = torch.cat([ids, gpt2.lm_head(gpt2.transformer.ln_f(h)).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(early["ids"], ids)
    assert not torch.equal(early["ids"], ours["ids"][:, :ids.shape[1]])  # layer 1 writes other text


def test_paired_speedup_measures_a_known_ratio():
    out = paired_speedup(lambda: time.sleep(0.03), lambda: time.sleep(0.01), repeats=3, warmup=0)
    assert 1.8 < out["speedup"] < 3.5  # 3x nominally; sleeps overshoot a little
    assert len(out["ratios"]) == 3


# ---- parameter savings -----------------------------------------------------------------------------------------
def test_parameter_savings_counted_from_the_model(vit, gpt2):
    L, d, C = 3, 16, 3
    s = parameter_savings(vit)
    assert s.extra_params == (L - 1) * (C * d + C)
    assert s.shared_params == sum(p.numel() for p in vit.parameters())
    assert math.isclose(s.saving, s.extra_params / (s.shared_params + s.extra_params))
    multi = VisionTransformer(ViTConfig(**{**TINY.__dict__, "multi_exit": True}))
    m = parameter_savings(multi)  # its own exit heads are left out of the shared count ...
    assert m.shared_params == s.shared_params
    # ... and the multi-exit total is exactly the multi-exit model's size
    assert m.multi_exit_params == sum(p.numel() for p in multi.parameters())
    g = parameter_savings(gpt2)  # tied embedding: the head is counted once, inside the backbone
    assert g.head_tied and g.num_classes == 50
    assert g.shared_params == sum(p.numel() for p in gpt2.parameters())
    assert g.extra_params == 2 * (50 * 16 + 50)


def test_savings_table_against_the_authors():
    table = savings_table().set_index("model")
    assert table.loc["DeiT-S", "shared_params"] == 22_050_664 and table.loc["DeiT-S", "extra_params"] == 4_235_000
    assert table.loc["DeiT-B", "extra_params"] == 8_459_000
    assert table.loc["GPT-2", "C"] == 50_257 and bool(table.loc["GPT-2", "head_tied"])
    assert table.loc["BERT-Base", "extra_params"] == 11 * (2 * 768 + 2)
    # DeiT: the counted parameters give the authors' figures to the printed digit
    assert round(100 * table.loc["DeiT-S", "saving"], 1) == 16.1
    assert round(100 * table.loc["DeiT-B", "saving"], 1) == 8.9
    # GPT-2: 77.4 % counted (124.4M, tied head counted once); the authors' 78.4 % is the nominal 117M
    assert round(100 * table.loc["GPT-2", "saving"], 1) == 77.4
    assert round(100 * table.loc["GPT-2", "saving_nominal"], 1) == 78.4


# ---- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: ConfidenceExit(1.5), lambda: ConfidenceExit(-0.1),
                                  lambda: ConfidenceExit(float("nan")), lambda: ConfidenceExit("0.9"),
                                  lambda: EntropyExit(-1.0), lambda: PatienceExit(0), lambda: PatienceExit(1.5),
                                  lambda: FixedExit(0), lambda: FixedExit(True)])
def test_thresholds_outside_their_range(make):
    with pytest.raises(ValueError, match="must be"):
        make()


def test_other_parameters_outside_their_range(vit):
    logits, labels = synthetic()
    with pytest.raises(ValueError, match=r"exit layer 5 is out of range: this model has layers 1..4"):
        simulate(FixedExit(5), logits, labels)
    for layer in (0, 4, 2.0):
        with pytest.raises(ValueError, match=r"exit layer must be an integer in 1..3"):
            exit_at_layer(vit, images(2), layer)
    with pytest.raises(ValueError, match="out of range"):
        early_exit(vit, images(2), FixedExit(4))
    with pytest.raises(ValueError, match="max_drop"):
        choose_by_accuracy_drop(sweep(logits, labels, "fixed"), 1.5)
    for fraction in (0, 1.5):
        with pytest.raises(ValueError, match="fraction must be"):
            minimal_depth([0.5, 0.9], fraction)
    with pytest.raises(ValueError, match="num_bins"):
        calibration(logits, labels, num_bins=0)
    with pytest.raises(ValueError, match="unknown exit policy"):
        sweep(logits, labels, "greedy")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_at_layer(transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2,
                          vocab_size=20, n_positions=8)), torch.tensor([[1]]), 1, max_new_tokens=0)


@pytest.mark.parametrize("call", [
    lambda lg, y: simulate(ConfidenceExit(0.9), lg, y), lambda lg, y: sweep(lg, y, "confidence"),
    lambda lg, y: overthinking(lg, y), lambda lg, y: calibration(lg, y), lambda lg, y: minimal_depth(lg, 0.9, labels=y),
    lambda lg, y: sweep_policies(lg, y)])
def test_logits_and_labels_of_different_lengths(call):
    logits, labels = synthetic()
    with pytest.raises(ValueError, match="labels hold 3 samples but the per-layer outputs hold 4"):
        call(logits, labels[:3])


def test_wrong_kinds_of_input(vit, gpt2):
    with pytest.raises(ValueError, match=r"\(L, n, C\)"):
        summarize(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="integer class indices"):
        saturation(torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels must be integer"):
        overthinking(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="must be"):
        LayerSummaries(torch.zeros(2, 3, dtype=torch.long), confidence=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="ExitPolicy"):
        simulate(0.9, synthetic()[0])
    with pytest.raises(ValueError, match="not a causal language model"):
        generate_at_layer(vit, torch.tensor([[1]]), 1)
    with pytest.raises(NotImplementedError, match="not stepped block by block"):
        early_exit(gpt2, {"input_ids": torch.tensor([[1, 2]])}, FixedExit(1))
    with pytest.raises(ValueError, match="stop must be a layer in 1..3"):
        adapt(vit).run_blocks(adapt(vit).run_blocks(adapt(vit).begin(images(1)), 1), 0)


def test_a_model_without_a_head_has_no_exits():
    config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=16)
    bare = transformers.BertModel(config).eval()
    batch = {"input_ids": torch.tensor([[1, 2, 3]])}
    for call in (lambda: early_exit(bare, batch, ConfidenceExit(0.9)), lambda: per_layer_logits(bare, batch),
                 lambda: parameter_savings(bare)):
        with pytest.raises(ValueError, match="no classification head"):
            call()
    assert parameter_savings(bare, num_classes=2).extra_params == 1 * (2 * 8 + 2)


def test_saturation_layers_numbered_as_the_authors_code_are_the_same_events():
    """The authors' GPT-2 code numbers saturation layers 0..L-1; ours are 1..L: offset by one, same histogram."""
    from layersim.metrics import saturation_layer

    logits, _ = synthetic()
    ours, theirs = saturation(logits), saturation(logits, numbering="authors")
    assert torch.equal(theirs.layers, ours.layers - 1) and int(theirs.layers.min()) >= 0
    assert torch.equal(theirs.histogram, ours.histogram) and theirs.early_fraction == ours.early_fraction
    assert torch.equal(saturation_layer(logits, numbering="authors"), saturation_layer(logits) - 1)
    with pytest.raises(ValueError, match="numbering must be one of"):
        saturation_layer(logits, numbering="zero")


def test_non_finite_logits_are_refused_by_the_exit_analysis():
    logits, labels = synthetic()
    for value in (float("nan"), float("inf")):
        bad = logits.clone()
        bad[0, 0, 0] = value  # layer 1: read by every policy
        for call in (lambda: simulate(ConfidenceExit(0.9), bad, labels), lambda: sweep(bad, labels, "confidence"),
                     lambda: summarize(bad), lambda: saturation(bad)):
            with pytest.raises(ValueError, match="NaN or infinite"):
                call()


# ---- issue 18: labels through the one check_labels, empty inputs, arguments of the wrong type ---------------
@pytest.mark.parametrize("call", [
    lambda lg, y: simulate(ConfidenceExit(0.9), lg, y), lambda lg, y: simulate(FixedExit(1), summarize(lg), y),
    lambda lg, y: sweep(lg, y, "fixed"), lambda lg, y: sweep_policies(lg, y), lambda lg, y: overthinking(lg, y),
    lambda lg, y: calibration(lg, y), lambda lg, y: minimal_depth(lg, 0.9, labels=y)])
@pytest.mark.parametrize("bad", [[0, 1, 2, 99], [0, 1, 2, -1], [0.0, 1.0, float("nan"), 2.0]])
def test_labels_out_of_range_negative_or_nan_are_refused(call, bad):
    """Labels the logits cannot predict gave an accuracy (always wrong) instead of an error."""
    logits, _ = synthetic()
    with pytest.raises(ValueError, match=r"labels must be (class indices in \[0, \d+\)|integer class indices)"):
        call(logits, torch.tensor(bad))


@pytest.mark.parametrize("call", [
    lambda lg, y: simulate(ConfidenceExit(0.9), lg, y), lambda lg, y: sweep(lg, y, "confidence"),
    lambda lg, y: summarize(lg), lambda lg, y: saturation(lg), lambda lg, y: calibration(lg, y),
    lambda lg, y: overthinking(lg, y), lambda lg, y: overthinking(lg.argmax(-1), y)])
def test_empty_inputs_are_refused(call):
    """No samples gave NaN accuracies and depths (or a crash) instead of an error."""
    for shape in ((3, 0, 4), (0, 2, 4)):
        with pytest.raises(ValueError, match="at least one layer"):
            call(torch.zeros(shape), torch.zeros(shape[1], dtype=torch.long))


def test_arguments_of_the_wrong_type_get_a_sentence():
    logits, labels = synthetic()
    num_layers = logits.shape[0]
    for flops in ("abc", object()):
        with pytest.raises(TypeError, match=f"flops .* must be a sequence of {num_layers} numbers"):
            simulate(ConfidenceExit(0.9), logits, labels, flops=flops)
    for flops in ([1.0] * (num_layers - 1), [1.0] * (num_layers - 1) + [float("nan")]):
        with pytest.raises(ValueError, match=f"must hold {num_layers} finite costs"):
            sweep(logits, labels, "fixed", flops=flops)
    with pytest.raises(TypeError, match="layer_cost must be a sequence"):
        overthinking(logits, labels, layer_cost="abc")
    with pytest.raises(ValueError, match="layer_cost must hold"):
        overthinking(logits, labels, layer_cost=[1.0] + [float("nan")] * (num_layers - 1))
    for values in (0.5, "0.5"):
        with pytest.raises(TypeError, match="values must be a list"):
            sweep(logits, labels, "confidence", values=values)
    with pytest.raises(ValueError, match="values is empty"):
        sweep(logits, labels, "confidence", values=[])
    for points in ("a", 0):
        with pytest.raises(ValueError, match="num_points must be"):
            sweep(logits, labels, "confidence", num_points=points)
    with pytest.raises(ValueError, match="unknown exit policy"):
        sweep(logits, labels, ["confidence"])
    # a good cost vector still gives the same expected cost as before
    result = simulate(FixedExit(2), logits, labels, flops=list(range(1, num_layers + 1)))
    assert result.expected_flops == 2.0
