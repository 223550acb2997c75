"""The standard, aligned and multi-exit objectives against hand-written cross-entropies."""
import math

import pytest
import torch
import torch.nn.functional as F

from layersim.losses import (AlignedLoss, MultiExitLoss, StandardLoss, aligned_weights, layer_cross_entropy,
                             objective_weights, readout_cross_entropy, weighted_cross_entropy)
from layersim.models import VisionTransformer, ViTConfig

CFG = ViTConfig(image_size=28, in_chans=1, patch_size=7, depth=4, width=32, heads=4, num_classes=5)


def vit(multi_exit=False, seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(CFG, multi_exit=multi_exit)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 5, (n,), generator=g)


def shared_reader(model):
    return lambda v, layer: model.head(model.norm(v))


def exit_reader(model):
    """Each layer its own head (the last the model's): the multi-exit baseline, written out by hand."""
    heads = list(model.exit_heads) + [model.head]
    return lambda v, layer: heads[layer - 1](model.norm(v))


def exit_logits(model, x):
    cls = model.norm(model.forward_intermediates(x)[:, :, 0])
    return torch.stack([h(c) for h, c in zip(list(model.exit_heads) + [model.head], cls)])


# ---- weights -------------------------------------------------------------------------------------------
def test_aligned_weights_schemes():
    w = aligned_weights(6)
    assert w.dtype == torch.float32 and w.shape == (6,)
    assert torch.allclose(w, torch.tensor([2 * l / 42 for l in range(1, 7)]))
    assert math.isclose(float(w.sum()), 1.0, abs_tol=1e-6)
    assert torch.all(w[1:] > w[:-1])  # grows with depth
    assert torch.equal(aligned_weights(4, "uniform"), torch.full((4,), 0.25))
    assert torch.equal(aligned_weights(3, "last"), torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(aligned_weights(3, [1, 1, 2]), torch.tensor([0.25, 0.25, 0.5]))
    assert torch.allclose(aligned_weights(2, torch.tensor([3.0, 1.0])), torch.tensor([0.75, 0.25]))
    assert torch.equal(aligned_weights(1), torch.tensor([1.0]))
    assert torch.equal(objective_weights("standard", 3), torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(objective_weights("multi_exit", 4), torch.full((4,), 0.25))
    assert torch.allclose(objective_weights("aligned", 3), torch.tensor([1 / 6, 2 / 6, 3 / 6]))


@pytest.mark.parametrize("num_layers, scheme, match", [
    (0, "linear", "positive int"), (3, "quadratic", "unknown weight scheme"), (3, [1, 2], "expected 3 layer weights"),
    (2, [1, -1], ">= 0"), (2, [1, float("nan")], "finite"), (2, [0, 0], "all zero"),
])
def test_aligned_weights_bad_input(num_layers, scheme, match):
    with pytest.raises(ValueError, match=match):
        aligned_weights(num_layers, scheme)


def test_objective_names_are_checked():
    with pytest.raises(ValueError, match="unknown objective 'align'"):
        objective_weights("align", 3)
    with pytest.raises(ValueError, match="trains the last layer only"):
        objective_weights("standard", 3, "linear")


# ---- values --------------------------------------------------------------------------------------------
def test_layer_cross_entropy_matches_per_layer_f_cross_entropy_with_ignored_targets():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 8, 4, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    y[2] = -100
    per_layer = layer_cross_entropy(logits, y, label_smoothing=0.1)
    expected = torch.stack([F.cross_entropy(logits[l], y, label_smoothing=0.1) for l in range(3)])
    assert torch.allclose(per_layer, expected, atol=1e-6)
    w = torch.tensor([0.2, 0.3, 0.5])
    assert torch.allclose(weighted_cross_entropy(logits, y, w), (w * layer_cross_entropy(logits, y)).sum())
    with pytest.raises(ValueError, match=r"targets must have shape \(n,\) = \(8,\)"):
        layer_cross_entropy(logits, y[:5])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_aligned_equals_hand_written_sum_of_layer_cross_entropies(smoothing):
    model, (x, y) = vit(), batch()
    cls = model.forward_intermediates(x)[:, :, 0]  # (L, n, d)
    out = readout_cross_entropy(cls, shared_reader(model), y, aligned_weights(4), label_smoothing=smoothing)
    L = 4
    expected = sum(2 * l / (L * (L + 1)) * F.cross_entropy(model.head(model.norm(cls[l - 1])), y,
                                                           label_smoothing=smoothing) for l in range(1, L + 1))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert not torch.isnan(out.per_layer).any()
    # the per-layer values are the layers' own cross-entropies
    assert torch.allclose(out.per_layer[0], F.cross_entropy(model.head(model.norm(cls[0])), y,
                                                            label_smoothing=smoothing).detach(), atol=1e-6)


def test_standard_is_the_models_own_cross_entropy_and_aligned_with_last_weight_equals_it_exactly():
    model, (x, y) = vit(), batch()
    cls = model.forward_intermediates(x)[:, :, 0]
    standard = readout_cross_entropy(cls, shared_reader(model), y, aligned_weights(4, "last"))
    assert torch.allclose(standard.loss, F.cross_entropy(model(x), y), atol=1e-6)
    aligned_last = readout_cross_entropy(cls, shared_reader(model), y, aligned_weights(4, [0, 0, 0, 5]))
    assert torch.equal(aligned_last.loss, standard.loss)  # bit for bit
    assert torch.isnan(standard.per_layer[:3]).all() and not torch.isnan(standard.per_layer[3])


def test_multi_exit_equals_hand_written_mean_over_own_heads():
    model, (x, y) = vit(multi_exit=True), batch()
    cls = model.forward_intermediates(x)[:, :, 0]
    out = readout_cross_entropy(cls, exit_reader(model), y, aligned_weights(4, "uniform"))
    expected = sum(F.cross_entropy(logits, y) for logits in exit_logits(model, x)) / 4
    assert torch.allclose(out.loss, expected, atol=1e-6)
    with pytest.raises(TypeError, match=r"reader\(v, layer\)"):
        readout_cross_entropy(cls, [exit_reader(model)], y, aligned_weights(4, "uniform"))


# ---- gradients -----------------------------------------------------------------------------------------
def test_gradient_reaches_every_layer_under_aligned_and_only_the_last_under_standard():
    model, (x, y) = vit(), batch()
    cls = model.forward_intermediates(x)[:, :, 0].detach().requires_grad_(True)
    for scheme, reached in (("linear", [True] * 4), ("last", [False, False, False, True]), ("uniform", [True] * 4)):
        cls.grad = None
        readout_cross_entropy(cls, shared_reader(model), y, aligned_weights(4, scheme)).loss.backward()
        norms = cls.grad.flatten(1).norm(dim=1)
        assert [bool(n > 0) for n in norms] == reached, (scheme, norms)


def _block_grads(model):
    return [sum(p.grad.norm() for p in block.parameters() if p.grad is not None) for block in model.blocks]


def test_gradients_reach_every_block_and_head_under_multi_exit_not_the_exit_heads_under_standard():
    model, (x, y) = vit(multi_exit=True), batch()
    cls = model.forward_intermediates(x)[:, :, 0]
    heads = list(model.exit_heads) + [model.head]
    readout_cross_entropy(cls, exit_reader(model), y, aligned_weights(4, "uniform")).loss.backward()
    assert all(g > 0 for g in _block_grads(model))
    assert all(h.weight.grad is not None and h.weight.grad.norm() > 0 for h in heads)

    model, (x, y) = vit(multi_exit=True), batch()
    cls = model.forward_intermediates(x)[:, :, 0]
    readout_cross_entropy(cls, exit_reader(model), y, aligned_weights(4, "last")).loss.backward()
    assert all(h.weight.grad is None for h in model.exit_heads)  # their layers were not read at all
    assert model.head.weight.grad.norm() > 0


def test_aligned_changes_the_gradient_of_the_first_block_standard_does_not_see_its_readout():
    """Under aligned, block 1 gets a gradient from its own readout on top of the last layer's."""
    grads = {}
    for scheme in ("last", "linear"):
        model, (x, y) = vit(), batch()
        cls = model.forward_intermediates(x)[:, :, 0]
        readout_cross_entropy(cls, shared_reader(model), y, aligned_weights(4, scheme)).loss.backward()
        grads[scheme] = model.blocks[0].mlp.fc2.weight.grad.clone()
    assert not torch.allclose(grads["last"], grads["linear"], atol=1e-6)


# ---- objectives on an adapter --------------------------------------------------------------------------
class MinimalAdapter:
    """The part of the adapter interface the objectives use, written out for our ViT (independent of
    layersim.models), to show the objectives need nothing else."""

    def __init__(self, model):
        self.model, self.num_layers = model, model.config.depth

    def hidden_states(self, x):
        return self.model.forward_intermediates(x)

    def head_inputs(self, hidden):
        return hidden[:, :, 0]

    def targets(self, hidden, labels):
        return labels

    def reader(self, v, layer):
        return self.model.head(self.model.norm(v))


def test_objective_modules_on_an_adapter():
    model, (x, y) = vit(multi_exit=True), batch()
    adapter = MinimalAdapter(model)
    hidden = adapter.hidden_states(x)
    standard = StandardLoss(4)(adapter, hidden, y)
    assert torch.allclose(standard.loss, F.cross_entropy(model(x), y), atol=1e-6)
    aligned = AlignedLoss(4, label_smoothing=0.1)(adapter, hidden, y)
    readout = model.head(model.norm(hidden[:, :, 0]))
    expected = sum(l / 10 * F.cross_entropy(logits, y, label_smoothing=0.1)
                   for l, logits in enumerate(readout, start=1))
    assert torch.allclose(aligned.loss, expected, atol=1e-6)
    from layersim.models import ExitHeads, adapt

    objective = MultiExitLoss(ExitHeads.for_adapter(adapt(model)), 4)
    assert {id(p) for p in objective.parameters()} == {id(p) for p in model.exit_heads.parameters()}
    multi = objective(adapter, hidden, y)
    assert torch.allclose(multi.loss, sum(F.cross_entropy(z, y) for z in exit_logits(model, x)) / 4, atol=1e-6)
    with pytest.raises(TypeError, match="must be an ExitHeads"):
        MultiExitLoss([exit_reader(model)], 4)
    with pytest.raises(ValueError, match="built for 3 layers, the model has 4"):
        AlignedLoss(3)(adapter, hidden, y)
    with pytest.raises(ValueError, match="label_smoothing"):
        AlignedLoss(4, label_smoothing=1.5)


def _real_adapters():
    import timm
    import transformers
    from transformers import AutoTokenizer

    from layersim.models import adapt, minilm_path

    torch.manual_seed(0)
    vit_adapter = adapt(vit().eval())
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=3, num_heads=2, num_classes=5).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        num_labels=5, initializer_range=0.2)).eval()
    g = torch.Generator().manual_seed(3)
    texts = ["a fine film", "dull and long, far too long", "the cast is great", "no", "what a mess of a plot"]
    return [(vit_adapter, batch(5)[0]), (adapt(deit), torch.randn(5, 3, 32, 32, generator=g)),
            (adapt(bert, tokenizer), texts)]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["our-vit", "timm-deit", "hf-bert"])
def test_objectives_on_every_adapter_family(which):
    from layersim.losses import make_objective
    from layersim.models import ExitHeads

    adapter, inputs = _real_adapters()[which]
    y = torch.tensor([0, 1, 2, 3, 4])
    hidden = adapter.hidden_states(inputs)
    L = adapter.num_layers
    standard = make_objective("standard", adapter)(adapter, hidden, y)
    assert torch.allclose(standard.loss, F.cross_entropy(adapter.logits(inputs), y), atol=1e-5)
    aligned = make_objective("aligned", adapter)(adapter, hidden, y)
    readout = adapter.read(hidden)  # (L, B, C) the adapter's own per-layer readout
    expected = sum(2 * l / (L * (L + 1)) * F.cross_entropy(readout[l - 1], y) for l in range(1, L + 1))
    assert torch.allclose(aligned.loss, expected, atol=1e-5)
    heads = ExitHeads.for_adapter(adapter)
    multi = make_objective("multi_exit", adapter, heads=heads)(adapter, hidden, y)
    exits = adapter.read(hidden, reader=heads)
    assert torch.allclose(multi.loss, sum(F.cross_entropy(z, y) for z in exits) / L, atol=1e-5)
    assert torch.allclose(exits[-1], readout[-1], atol=1e-6)  # layer L is the model's own head


def test_layer_weights_and_label_smoothing_are_checked_not_broadcast():
    """A weight vector of the wrong length used to broadcast ((1,) weighted every layer 1; (L, 1) tripled the
    loss) and NaN label smoothing silently became 0: both are errors now."""
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(3, 5, 4, generator=g), torch.randint(0, 4, (5,), generator=g)
    good = weighted_cross_entropy(logits, y, torch.tensor([0.2, 0.3, 0.5]))
    assert torch.allclose(good, (torch.tensor([0.2, 0.3, 0.5]) * layer_cross_entropy(logits, y)).sum())
    for bad in (torch.tensor([1.0]), torch.ones(3, 1), torch.tensor([0.5, float("nan"), 0.5]), torch.tensor([1.0, -1.0, 1.0])):
        with pytest.raises(ValueError, match="layer weights"):
            weighted_cross_entropy(logits, y, bad)
    for smoothing in (float("nan"), -0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing"):
            layer_cross_entropy(logits, y, label_smoothing=smoothing)
