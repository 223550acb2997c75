"""Language models: the aligned loss without L copies of the vocabulary logits (fused, chunked) against the
naive loss, on tiny GPT-2 and Llama models built from configs."""
import pytest
import torch
import transformers

from layersim import losses
from layersim.models import ExitHeads, adapt

transformers.logging.set_verbosity_error()
V = 97


def _tiny_lm(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=2, n_positions=64,
                                         initializer_range=0.2)
    else:
        config = transformers.LlamaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                          num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
                                          initializer_range=0.2)
    return transformers.AutoModelForCausalLM.from_config(config).double().eval()  # no dropout: comparable runs


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (3, 17), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 12:] = 0  # padding: left out of every loss
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("objective", ["aligned", "multi_exit", "standard"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_fused_layer_losses_equal_the_naive_ones(kind, objective, final_norm, monkeypatch):
    model = _tiny_lm(kind)
    adapter = adapt(model, final_norm=final_norm)
    heads = ExitHeads.for_adapter(adapter).double() if objective == "multi_exit" else None
    params = list(model.parameters()) + (list(heads.parameters()) if heads is not None else [])
    results = {}
    for fused in (False, True):
        monkeypatch.setattr(losses, "FUSE_ABOVE_ELEMENTS", -1 if fused else 2 ** 62)
        loss_fn = losses.make_objective(objective, adapter, heads=heads, label_smoothing=0.1)
        hidden = adapter.hidden_states(_batch())
        out = loss_fn(adapter, hidden, None)
        grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        results[fused] = (out, grads)
    (naive, g_naive), (fused, g_fused) = results[False], results[True]
    assert torch.allclose(fused.loss, naive.loss, atol=1e-10)
    assert torch.allclose(fused.per_layer, naive.per_layer, atol=1e-6, equal_nan=True)
    for a, b in zip(g_fused, g_naive):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-9), (a - b).abs().max()


def test_fused_path_is_taken_for_a_vocabulary(monkeypatch):
    """At a vocabulary's size the loss goes through fused_ce (never the full logits): the three layers of the
    aligned loss are read by the shared head in one fused call, one segment per layer."""
    import layersim.fused_ce as fused_ce

    calls = []
    original = fused_ce.segments_cross_entropy
    monkeypatch.setattr(fused_ce, "segments_cross_entropy",
                        lambda hiddens, *a, **k: calls.append(len(hiddens)) or original(hiddens, *a, **k))
    monkeypatch.setattr(losses, "FUSE_ABOVE_ELEMENTS", 1000)
    adapter = adapt(_tiny_lm("gpt2"))
    out = losses.make_objective("aligned", adapter)(adapter, adapter.hidden_states(_batch()), None)
    assert calls == [3] and torch.isfinite(out.loss)


# ---- per-layer next-token report ------------------------------------------------------------------------
def test_next_token_report_against_a_hand_computation():
    from layersim.extract import extract
    from layersim.lm import next_token_report, token_batches

    model = _tiny_lm("llama").float()
    adapter = adapt(model)
    ids = torch.randint(0, V, (4, 9), generator=torch.Generator().manual_seed(3))
    out = extract(adapter, token_batches(ids, 3), pooling="tokens", progress=False)
    report = next_token_report(out)
    with torch.no_grad():
        logits = model(input_ids=ids, output_hidden_states=True)
        hidden = adapter.hidden_states({"input_ids": ids})
        per_layer = adapter.read(hidden).reshape(3, 4, 8, V)  # (L, B, T-1, V): positions with a next token
    targets = ids[:, 1:]
    for l in range(3):
        logp = per_layer[l].log_softmax(-1)
        acc = (logp.argmax(-1) == targets).double().mean()
        ppl = torch.exp(-logp.gather(-1, targets[..., None]).mean())
        assert abs(float(report.accuracy[l]) - float(acc)) < 1e-6
        assert abs(float(report.perplexity[l]) - float(ppl)) < 1e-3 * float(ppl)
    assert report.num_tokens == 4 * 8 and report.saturation.histogram.sum() == 32
    assert torch.equal(out.preds[-1], logits.logits[:, :-1].argmax(-1).reshape(-1))
