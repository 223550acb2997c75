"""The fused, chunked linear + cross-entropy against the plain PyTorch loss: values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from torch.utils.flop_counter import FlopCounterMode

from layersim.fused_ce import linear_cross_entropy, segments_cross_entropy


def _data(n=37, d=8, V=53, seed=0, dtype=torch.float64, bias=True, ignore=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(V, d, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    t = torch.randint(0, V, (n,), generator=g)
    if ignore:
        t[::5] = -100
    return h, w, b, t


@pytest.mark.parametrize("chunk_rows", [1, 7, 37, 1000])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_equals_the_naive_loss_and_its_gradients(chunk_rows, bias, reduction, smoothing):
    h, w, b, t = _data(bias=bias)
    fused = linear_cross_entropy(h, w, b, t, chunk_rows=chunk_rows, reduction=reduction, label_smoothing=smoothing)
    grads = torch.autograd.grad(fused * 3.0, [h, w] + ([b] if bias else []))  # a scaled upstream gradient
    naive = F.cross_entropy(F.linear(h, w, b), t, reduction=reduction, label_smoothing=smoothing)
    expected = torch.autograd.grad(naive * 3.0, [h, w] + ([b] if bias else []))
    assert torch.allclose(fused, naive, atol=1e-12, rtol=1e-10)
    for got, want in zip(grads, expected):
        assert got.dtype == want.dtype and torch.allclose(got, want, atol=1e-10, rtol=1e-8)


def test_float32_and_bfloat16_inputs_keep_float32_accuracy():
    h, w, _, t = _data(n=64, d=16, V=300, dtype=torch.float32, bias=False)
    exact = F.cross_entropy(F.linear(h.double(), w.double()), t).detach()
    assert abs(linear_cross_entropy(h, w, None, t).item() - exact.item()) < 1e-5
    hb, wb = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    loss = linear_cross_entropy(hb, wb, None, t)
    loss.backward()
    reference = F.cross_entropy(F.linear(hb.double(), wb.double()), t).detach()
    assert abs(loss.item() - reference.item()) < 1e-5 and hb.grad.dtype == torch.bfloat16


def test_shared_weight_accumulates_over_layers_like_autograd():
    """The aligned loss calls it once per layer with the same head: gradients add up as autograd's do."""
    h1, w, _, t = _data(seed=1, bias=False)
    h2 = torch.randn_like(h1, requires_grad=True)
    (0.3 * linear_cross_entropy(h1, w, None, t, chunk_rows=5) + 0.7 * linear_cross_entropy(h2, w, None, t)).backward()
    fused = w.grad.clone()
    w.grad = None
    (0.3 * F.cross_entropy(h1 @ w.T, t) + 0.7 * F.cross_entropy(h2 @ w.T, t)).backward()
    assert torch.allclose(fused, w.grad, atol=1e-10)


def test_no_gradient_work_without_grad():
    h, w, b, t = _data()
    with torch.no_grad():
        value = linear_cross_entropy(h, w, b, t)
    assert torch.allclose(value, F.cross_entropy(F.linear(h, w, b), t))


def test_bad_input():
    h, w, b, t = _data()
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 53\)"):
        linear_cross_entropy(h, w, b, torch.full_like(t, 60))
    with pytest.raises(ValueError, match="weight must be"):
        linear_cross_entropy(h, w[:, :3], b, t)
    with pytest.raises(ValueError, match=r"targets must have shape \(n,\)"):
        linear_cross_entropy(h, w, b, t[:-1])
    with pytest.raises(ValueError, match="chunk_rows"):
        linear_cross_entropy(h, w, b, t, chunk_rows=0)
    with pytest.raises(ValueError, match="nothing to compute a mean"):
        linear_cross_entropy(h, w, b, torch.full_like(t, -100))


def test_an_ignored_row_holding_nan_is_ignored_as_f_cross_entropy_ignores_it():
    """Padding rows (target -100) may hold anything: NaN or Inf there must not reach the loss or the gradients,
    whatever the vocabulary size that picks the fused path."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 8, generator=g)
    weight = torch.randn(11, 8, generator=g)
    bias = torch.randn(11, generator=g)
    targets = torch.tensor([3, -100, 7, 0, -100, 10])
    hidden[1] = float("nan")
    hidden[4, 2] = float("inf")
    h_ref, h_fused = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    valid = targets != -100
    reference = F.cross_entropy(F.linear(h_ref[valid], weight, bias), targets[valid])
    fused = linear_cross_entropy(h_fused, weight, bias, targets, chunk_rows=4)
    assert torch.isfinite(fused) and torch.allclose(fused, reference, atol=1e-6)
    fused.backward()
    reference.backward()
    assert torch.isfinite(h_fused.grad).all() and torch.equal(h_fused.grad[~valid], torch.zeros(2, 8))
    assert torch.allclose(h_fused.grad[valid], h_ref.grad[valid], atol=1e-6)


def _addmm_flops(bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _flops(fn):
    """Multiply-add FLOPs of fn(), counting the in-place addmm_ that FlopCounterMode leaves out."""
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops}) as counter:
        out = fn()
    return counter.get_total_flops(), out


def test_gradients_are_formed_in_the_forward_pass_logits_once():
    """Liger-style: with gradients, the forward pays 3 N d V multiply-adds (logits, grad of hidden, grad of weight)
    and backward none; without gradients the forward pays N d V only."""
    n, d, V = 40, 16, 300
    h, w, _, t = _data(n=n, d=d, V=V, dtype=torch.float32, bias=False, ignore=False)
    forward, loss = _flops(lambda: linear_cross_entropy(h, w, None, t, chunk_rows=7))
    backward, _ = _flops(lambda: loss.backward())
    with torch.no_grad():
        evaluation, _ = _flops(lambda: linear_cross_entropy(h, w, None, t, chunk_rows=7))
    assert (forward, backward, evaluation) == (3 * 2 * n * d * V, 0, 2 * n * d * V)
    hidden_only, _ = _flops(lambda: linear_cross_entropy(h, w.detach(), None, t))  # no weight gradient wanted
    assert hidden_only == 2 * 2 * n * d * V


def test_segments_equal_separate_weighted_losses_and_keep_one_weight_gradient():
    """Three layers read by one shared weight in one call, each with its own loss weight: value, per-segment totals
    and gradients equal the weighted sum of plain F.cross_entropy losses."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(29, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(29, generator=g, dtype=torch.float64, requires_grad=True)
    hs = [torch.randn(n, 6, generator=g, dtype=torch.float64, requires_grad=True) for n in (11, 5, 11)]
    ts = [torch.randint(0, 29, (h.shape[0],), generator=g) for h in hs]
    ts[2][3] = -100
    scales = torch.tensor([0.2, 0.5, 1.3])
    loss, totals = segments_cross_entropy(hs, w, b, ts, scales, 10, chunk_rows=4, label_smoothing=0.05)
    sums = [F.cross_entropy(F.linear(h, w, b), t, reduction="sum", label_smoothing=0.05) for h, t in zip(hs, ts)]
    expected = sum(s * x / 10 for s, x in zip(scales.tolist(), sums))
    assert torch.allclose(loss, expected, atol=1e-12) and not totals.requires_grad
    assert torch.allclose(totals, torch.stack(sums).detach(), atol=1e-12)
    got = torch.autograd.grad(2.5 * loss, [w, b, *hs])
    want = torch.autograd.grad(2.5 * expected, [w, b, *hs])
    for a, e in zip(got, want):
        assert torch.allclose(a, e, atol=1e-12)


def test_differentiating_twice_is_a_clear_error_and_segment_weights_are_checked():
    h, w, b, t = _data()
    loss = linear_cross_entropy(h, w, b, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        loss.backward()
    for bad in ([0.5], [1.0, float("nan")], [1.0, -1.0]):
        with pytest.raises(ValueError, match="expected 2 segment weights|segment weights in weights must be finite"):
            segments_cross_entropy([h, h], w, b, [t, t], torch.tensor(bad), 1)
    with pytest.raises(ValueError, match="one targets tensor per hidden"):
        segments_cross_entropy([h, h], w, b, [t], torch.ones(2), 1)
