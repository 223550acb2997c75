"""The sampled aligned loss (layer L plus one sampled layer per token or step, or in turn) against the full aligned
loss: exact expectation by enumerating the draws, a Monte Carlo check of the real sampler, and the edge cases."""
import dataclasses
import itertools
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from layersim import losses
from layersim.losses import (AlignedLoss, StandardLoss, aligned_weights, draws_cross_entropy, layer_draws,
                             make_objective, readout_cross_entropy)

L, V = 4, 37


def gpt(final_norm=True):
    """A tiny GPT-2 (4 blocks, vocabulary 37) in float64, its hidden states as a leaf (so that gradients of the
    loss with respect to every layer's states, the final norm and the head can be compared)."""
    import transformers

    from layersim.models import adapt

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=L, n_embd=16, n_head=2, vocab_size=V,
                                                                 n_positions=16)).double()
    adapter = adapt(model, final_norm=final_norm)
    ids = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 2:] = 0  # padded positions: 3 + 1 targets
    hidden = adapter.hidden_states({"input_ids": ids, "attention_mask": mask})
    hidden = dataclasses.replace(hidden, states=hidden.states.detach().requires_grad_())
    return adapter, hidden


def params(adapter, hidden):
    return [hidden.states, adapter.head.weight, adapter.norm_module.weight, adapter.norm_module.bias]


def loss_and_grads(adapter, hidden, fn):
    loss = fn()
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, params(adapter, hidden), retain_graph=True)]


@pytest.fixture(params=[False, True], ids=["naive", "fused"])
def fused(request, monkeypatch):
    monkeypatch.setattr(losses, "FUSE_ABOVE_ELEMENTS", 0 if request.param else 2 ** 62)
    return request.param


@pytest.mark.parametrize("final_norm, scheme", [(True, "linear"), (False, [3.0, 0.0, 1.0, 2.0])])
def test_token_sampling_is_unbiased_exactly_by_enumerating_every_draw(final_norm, scheme, fused):
    """E over the per-token draws of the sampled loss and of its gradient equals the full aligned loss and its
    gradient: every assignment of layers 1..L-1 to the 4 rows, weighted by its probability (float64; the layer
    weights are float32, so agreement is to ~1e-7 relative, where a bias would show at ~1e-2)."""
    adapter, hidden = gpt(final_norm)
    vectors, targets = adapter.head_inputs(hidden), adapter.targets(hidden)
    w = aligned_weights(L, scheme)
    n = targets.shape[0]
    full = loss_and_grads(adapter, hidden, lambda: readout_cross_entropy(vectors, adapter.reader, targets, w).loss)
    rest = float(w[:-1].sum())
    q = (w[:-1] / rest).tolist()
    mean_loss, mean_grads = 0.0, [torch.zeros_like(g) for g in full[1]]
    for draw in itertools.product(range(1, L), repeat=n):
        p = math.prod(q[j - 1] for j in draw)
        if p == 0:
            continue
        layers = torch.tensor([[L] * n, list(draw)])
        value, grads = loss_and_grads(adapter, hidden, lambda: draws_cross_entropy(
            vectors, adapter.reader, targets, layers, torch.tensor([float(w[-1]), rest]))[0])
        mean_loss += p * value
        mean_grads = [m + p * g for m, g in zip(mean_grads, grads)]
    assert torch.allclose(mean_loss, full[0], atol=0, rtol=1e-6)
    for got, want in zip(mean_grads, full[1]):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-6)


@pytest.mark.parametrize("m", [1, 2])
def test_thinned_token_sampling_is_unbiased_exactly_by_enumerating_every_subset_and_draw(m, fused):
    """With a fraction of the rows reading their sampled layer (m of the n rows, without replacement, weighted
    W n / m; the others 0: not read), E over the subsets and the draws of the loss and its gradient equals
    the full aligned loss and its gradient."""
    adapter, hidden = gpt()
    vectors, targets = adapter.head_inputs(hidden), adapter.targets(hidden)
    w = aligned_weights(L)
    n = targets.shape[0]
    full = loss_and_grads(adapter, hidden, lambda: readout_cross_entropy(vectors, adapter.reader, targets, w).loss)
    rest = float(w[:-1].sum())
    q = (w[:-1] / rest).tolist()
    subsets = list(itertools.combinations(range(n), m))
    mean_loss, mean_grads = 0.0, [torch.zeros_like(g) for g in full[1]]
    for subset in subsets:
        for draw in itertools.product(range(1, L), repeat=m):
            p = math.prod(q[j - 1] for j in draw) / len(subsets)
            row = [0] * n
            for i, j in zip(subset, draw):
                row[i] = j
            value, grads = loss_and_grads(adapter, hidden, lambda: draws_cross_entropy(
                vectors, adapter.reader, targets, torch.tensor([[L] * n, row]),
                torch.tensor([float(w[-1]), rest * n / m]))[0])
            mean_loss += p * value
            mean_grads = [a + p * g for a, g in zip(mean_grads, grads)]
    assert torch.allclose(mean_loss, full[0], atol=0, rtol=1e-6)
    for got, want in zip(mean_grads, full[1]):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-6)
    # and a plan that reads only some rows is not the full loss at any one draw
    one = draws_cross_entropy(vectors, adapter.reader, targets, torch.tensor([[L] * n, [1] + [0] * (n - 1)]),
                              torch.tensor([float(w[-1]), rest * n]))[0]
    assert not torch.allclose(one, full[0], atol=1e-3)


def test_step_sampling_is_unbiased_and_rotation_is_exact_over_a_cycle_only(fused):
    adapter, hidden = gpt()
    vectors, targets = adapter.head_inputs(hidden), adapter.targets(hidden)
    w = aligned_weights(L)
    full = loss_and_grads(adapter, hidden, lambda: readout_cross_entropy(vectors, adapter.reader, targets, w).loss)
    q = (w[:-1] / w[:-1].sum()).tolist()
    n = targets.shape[0]
    scales = torch.tensor([float(w[-1]), 1 - float(w[-1])])
    step = [loss_and_grads(adapter, hidden, lambda: draws_cross_entropy(
        vectors, adapter.reader, targets, torch.tensor([[L] * n, [j] * n]), scales)[0]) for j in range(1, L)]
    expected = sum(p * value for p, (value, _) in zip(q, step))
    assert torch.allclose(expected, full[0], atol=1e-8)
    assert torch.allclose(sum(p * g[0] for p, (_, g) in zip(q, step)), full[1][0], atol=1e-8)
    # rotation: R = L - 1 consecutive steps average to the full loss exactly; one step alone does not
    rotation = [loss_and_grads(adapter, hidden, lambda: draws_cross_entropy(
        vectors, adapter.reader, targets, *layer_draws(w, "rotation", n, step=t))[0]) for t in range(5, 5 + L - 1)]
    assert torch.allclose(sum(v for v, _ in rotation) / (L - 1), full[0], atol=1e-8)
    for k in range(4):
        assert torch.allclose(sum(g[k] for _, g in rotation) / (L - 1), full[1][k], atol=1e-8)
    assert not torch.allclose(rotation[0][0], full[0], atol=1e-3)
    assert layer_draws(w, "rotation", 3, step=0)[0][1].tolist() == [1, 1, 1]
    assert layer_draws(w, "rotation", 3, step=4)[0][1].tolist() == [2, 2, 2]  # (2 - 1 - 4) mod 3 == 0


def test_the_real_sampler_averages_to_the_full_loss_within_its_standard_error():
    """Monte Carlo through AlignedLoss (its own generator, set_draw per step): the mean of 400 sampled losses and
    of the gradient's projections on fixed directions lie within 4.5 standard errors of the full values."""
    adapter, hidden = gpt()
    full = loss_and_grads(adapter, hidden, lambda: AlignedLoss(L)(adapter, hidden, None).loss)
    g = torch.Generator().manual_seed(5)
    directions = [torch.randn(full[1][k].shape, generator=g, dtype=torch.float64) for k in (0, 1)]
    project = lambda grads: torch.stack([(d * grads[k]).sum() for k, d in enumerate(directions)])  # noqa: E731
    for mode, fraction in (("token", 1.0), ("step", 1.0), ("token", 0.5)):
        objective = AlignedLoss(L, layer_sampling=mode, sampled_fraction=fraction)
        samples = []
        for step in range(400):
            objective.set_draw(7, step)
            value, grads = loss_and_grads(adapter, hidden, lambda: objective(adapter, hidden, None).loss)
            samples.append(torch.cat([value[None], project(grads)]))
        samples = torch.stack(samples)
        mean, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
        want = torch.cat([full[0][None], project(full[1])])
        assert (se > 0).all() and ((mean - want).abs() < 4.5 * se).all(), (mode, mean, want, se)


def test_the_draws_follow_the_weights():
    w = aligned_weights(6)
    g = torch.Generator().manual_seed(0)
    layers, scales = layer_draws(w, "token", 60000, generator=g)
    assert layers[0].eq(6).all() and torch.allclose(scales, torch.tensor([w[-1], 1 - w[-1]]))
    counts = torch.bincount(layers[1], minlength=7)[1:6].double()
    q = (w[:-1] / w[:-1].sum()).double()
    assert ((counts - 60000 * q).abs() < 5 * (60000 * q * (1 - q)).sqrt()).all(), counts
    assert layer_draws(w, "step", 9, generator=g)[0][1].unique().numel() == 1


def test_a_fraction_thins_the_same_draws_and_scales_them_up():
    """fraction 1 draws exactly as before; a fraction keeps round(f n) rows of the same draws (the others 0),
    a different random subset per seed, each row equally often, weighted W n / m."""
    w = aligned_weights(6)
    whole = layer_draws(w, "token", 1000, generator=torch.Generator().manual_seed(3))
    same = layer_draws(w, "token", 1000, generator=torch.Generator().manual_seed(3), fraction=1.0)
    assert all(torch.equal(a, b) for a, b in zip(whole, same))
    layers, scales = layer_draws(w, "token", 1000, generator=torch.Generator().manual_seed(3), fraction=0.25)
    kept = layers[1] > 0
    assert int(kept.sum()) == 250 and torch.equal(layers[1][kept], whole[0][1][kept]) and layers[0].eq(6).all()
    assert torch.allclose(scales, torch.tensor([w[-1], (1 - w[-1]) * 4]))
    hits = torch.zeros(10)
    for seed in range(2000):
        hits += (layer_draws(w, "token", 10, generator=torch.Generator().manual_seed(seed), fraction=0.3)[0][1] > 0)
    assert ((hits - 600).abs() < 5 * math.sqrt(2000 * 0.3 * 0.7)).all(), hits  # each row read 3 times in 10
    assert layer_draws(w, "token", 3, generator=torch.Generator(), fraction=0.01)[0][1].gt(0).sum() == 1  # m >= 1


def test_sampled_reduces_to_the_standard_loss_when_all_weight_is_on_the_last_layer(fused):
    adapter, hidden = gpt()
    standard = loss_and_grads(adapter, hidden, lambda: StandardLoss(L)(adapter, hidden, None).loss)
    for mode in ("token", "step", "rotation"):
        objective = AlignedLoss(L, "last", layer_sampling=mode)
        sampled = loss_and_grads(adapter, hidden, lambda: objective(adapter, hidden, None).loss)
        assert torch.equal(sampled[0], standard[0]) and all(torch.equal(a, b) for a, b in zip(sampled[1], standard[1]))


def test_draws_are_reproducible_from_seed_and_step_and_per_layer_keeps_the_layers_read_in_full():
    adapter, hidden = gpt()
    objective = AlignedLoss(L, layer_sampling="token")
    values = []
    for step in (3, 3, 4):
        objective.set_draw(0, step, 1)
        values.append(objective(adapter, hidden, None))
    assert torch.equal(values[0].loss, values[1].loss) and not torch.equal(values[0].loss, values[2].loss)
    assert torch.isnan(values[0].per_layer[:-1]).all() and torch.isfinite(values[0].per_layer[-1])
    step = AlignedLoss(L, layer_sampling="step")(adapter, hidden, None)
    assert int(torch.isfinite(step.per_layer).sum()) == 2 and torch.isfinite(step.per_layer[-1])
    again = AlignedLoss(L, layer_sampling="token")  # without set_draw: (seed, call count), reproducible
    other = AlignedLoss(L, layer_sampling="token")
    assert torch.equal(again(adapter, hidden, None).loss, other(adapter, hidden, None).loss)


def _addmm_flops(bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def test_token_sampling_reads_the_head_once_for_the_sampled_rows(monkeypatch):
    """The cost: layer L's rows and the sampled rows go through one fused head call, 3 x 2 x (2 N d V)
    multiply-add FLOPs with the gradients, where the full loss pays 3 x L x (2 N d V)."""
    monkeypatch.setattr(losses, "FUSE_ABOVE_ELEMENTS", 0)
    adapter, hidden = gpt()
    vectors = adapter.head_inputs(hidden).detach().requires_grad_()
    targets, d = adapter.targets(hidden), vectors.shape[-1]
    n = targets.shape[0]
    counts = {}
    for mode in ("none", "token"):
        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops}) as counter:
            draws_cross_entropy(vectors, adapter.reader, targets,
                                *layer_draws(aligned_weights(L), mode, n, generator=torch.Generator()))[0].backward()
        counts[mode] = counter.get_total_flops()
    readout = 2 * n * d * V
    assert counts == {"none": 3 * L * readout, "token": 3 * 2 * readout}
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops}) as counter:
        draws_cross_entropy(vectors, adapter.reader, targets, *layer_draws(
            aligned_weights(L), "token", n, generator=torch.Generator(), fraction=0.25))[0].backward()
    assert counter.get_total_flops() == 3 * 2 * (n + max(1, round(0.25 * n))) * d * V  # layer L + m sampled rows


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="expected 4 layer weights"):
        AlignedLoss(4, [1.0, 2.0], layer_sampling="token")
    with pytest.raises(ValueError, match="finite"):
        AlignedLoss(4, [1.0, float("nan"), 1.0, 1.0], layer_sampling="token")
    with pytest.raises(ValueError, match="unknown layer sampling 'tokens'"):
        AlignedLoss(4, layer_sampling="tokens")
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        layer_draws(torch.tensor([0.5, -0.1, 0.6]), "token", 3)
    adapter, hidden = gpt()
    vectors, targets = adapter.head_inputs(hidden), adapter.targets(hidden)
    with pytest.raises(ValueError, match=r"layers must be 1-based layer numbers in 1..4 \(0: the row is not read\)"):
        draws_cross_entropy(vectors, adapter.reader, targets, -torch.ones(1, 4, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match=r"a segment of layers reads no row \(all 0\)"):
        draws_cross_entropy(vectors, adapter.reader, targets, torch.zeros(1, 4, dtype=torch.long), torch.ones(1))
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            layer_draws(aligned_weights(L), "token", 3, fraction=bad)
        with pytest.raises(ValueError, match="sampled_fraction"):
            AlignedLoss(L, layer_sampling="token", sampled_fraction=bad)
    with pytest.raises(ValueError, match="it needs sampling 'token', not 'step'"):
        layer_draws(aligned_weights(L), "step", 3, fraction=0.5)
    with pytest.raises(ValueError, match="it needs layer_sampling='token', not 'none'"):
        AlignedLoss(L, sampled_fraction=0.5)
    with pytest.raises(ValueError, match="objective 'standard' takes sampled_fraction=1"):
        make_objective("standard", adapter, sampled_fraction=0.5)
    with pytest.raises(ValueError, match=r"expected layers \(S, 4\) and scales \(S,\)"):
        draws_cross_entropy(vectors, adapter.reader, targets, torch.ones(2, 4, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match="objective 'standard' takes layer_sampling='none'"):
        make_objective("standard", adapter, layer_sampling="token")


def test_config_key_layer_sampling():
    from layersim.train.config import ConfigError, identity_hash, resolve

    with pytest.raises(ConfigError, match="needs objective aligned, not 'multi_exit'"):
        resolve("gpt-english", {"objective": "multi_exit", "layer_sampling": "token"})
    with pytest.raises(ConfigError, match="layer_sampling must be one of none, token, step, rotation"):
        resolve("gpt-english", {"objective": "aligned", "layer_sampling": "layer"})
    aligned = resolve("gpt-english", {"objective": "aligned"})
    assert aligned.layer_sampling == "none"
    assert identity_hash(aligned) != identity_hash(resolve(aligned, {"layer_sampling": "token"}))
    assert identity_hash(aligned) == identity_hash(resolve(aligned, {"layer_sampling": "none"}))
    token = resolve(aligned, {"layer_sampling": "token"})
    assert identity_hash(token) == identity_hash(resolve(token, {"sampled_fraction": 1}))
    assert identity_hash(token) != identity_hash(resolve(token, {"sampled_fraction": 0.25}))
    with pytest.raises(ConfigError, match="sampled_fraction 0.5 thins the per-token draws: it needs layer_sampling "
                                          "token, not 'none'"):
        resolve(aligned, {"sampled_fraction": 0.5})
    with pytest.raises(ConfigError, match="sampled_fraction"):
        resolve(token, {"sampled_fraction": 0})
