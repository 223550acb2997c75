"""The fused, chunked linear + cross-entropy against the plain PyTorch loss: values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from layersim.fused_ce import linear_cross_entropy


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
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 53\)"):
        linear_cross_entropy(h, w, b, torch.full_like(t, 60))
    with pytest.raises(ValueError, match="weight must be"):
        linear_cross_entropy(h, w[:, :3], b, t)
    with pytest.raises(ValueError, match="one per row"):
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
