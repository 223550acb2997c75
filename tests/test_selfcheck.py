"""Every adapter reads its model exactly, or is refused (the self-check of layersim.models.selfcheck).

Small models of the families that used to give wrong numbers without an error (MPT and OPT truncated
forwards, pre-norm encoders read as post-norm, timm ViTs that normalise before average pooling, a user's
model whose head normalises then pools), built from small configs with their norms given non-trivial weights
(a fresh LayerNorm is nearly idempotent, which would hide a norm applied twice or in the wrong place). For
each, independently of the adapter's own check: the reader on layer L equals the model's logits, every
truncated forward equals the full forward's layers, and each layer equals its block's output recorded by a
hook during the model's own forward. Adapters that assume the wrong structure are refused.
"""
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import transformers

from layersim.models import HFEncoder, SelfCheckError, TimmViTAdapter, adapt, eval_mode

transformers.logging.set_verbosity_error()
V = 100
README = Path(__file__).resolve().parents[1] / "README.md"


def randomize_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every LayerNorm / RMSNorm weights far from (1, 0), as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm")):
                for name, centre in (("weight", 1.0), ("bias", 0.0)):
                    p = getattr(module, name, None)
                    if isinstance(p, torch.Tensor):
                        p.copy_(centre + 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def text_batch():
    ids = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def own_readme_adapter():
    """The user's adapter exactly as the README shows it, and a user model it fits."""
    code = re.search(r"<!-- own-model -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    class MyModel(nn.Module):  # normalises every token, then pools, then classifies
        def __init__(self, d_in=8, width=16, depth=3, classes=4):
            super().__init__()
            self.embed = nn.Linear(d_in, width)
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True,
                                                                   norm_first=True) for _ in range(depth))
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, classes)

        def forward(self, x):
            h = self.embed(x)
            for block in self.blocks:
                h = block(h)
            return self.head(self.norm(h).mean(1))

    return namespace["MyAdapter"], MyModel


def cases():
    torch.manual_seed(0)
    tiny_timm = dict(pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=7)
    text = dict(vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                initializer_range=0.2)  # large enough for distinct logits per layer
    my_adapter, my_model = own_readme_adapter()
    return {
        "mpt": (transformers.MptForCausalLM(transformers.MptConfig(vocab_size=V, d_model=32, n_layers=3, n_heads=2,
                                                                    max_seq_len=64, initializer_range=0.2)),
                text_batch()),
        "opt": (transformers.OPTForCausalLM(transformers.OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                                                    ffn_dim=64, num_attention_heads=2,
                                                                    word_embed_proj_dim=16, init_std=0.2,
                                                                    max_position_embeddings=64)), text_batch()),
        "gpt-neox": (transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**text, max_position_embeddings=64)),
                     text_batch()),
        "roberta-prenorm": (transformers.RobertaPreLayerNormForSequenceClassification(
            transformers.RobertaPreLayerNormConfig(**text, num_labels=3, pad_token_id=0)), text_batch()),
        "modernbert": (transformers.ModernBertForSequenceClassification(
            transformers.ModernBertConfig(**text, num_labels=3, pad_token_id=0)), text_batch()),
        "modernbert-mean": (transformers.ModernBertForSequenceClassification(
            transformers.ModernBertConfig(**text, num_labels=3, pad_token_id=0, classifier_pooling="mean")),
            text_batch()),
        "timm-avg-pool": (timm.create_model("vit_tiny_patch16_224", global_pool="avg", fc_norm=False, **tiny_timm),
                          torch.randn(3, 3, 32, 32)),
        "timm-distilled": (timm.create_model("deit_tiny_distilled_patch16_224", **tiny_timm), torch.randn(3, 3, 32, 32)),
        "user-module": (my_model(), torch.randn(3, 5, 8)),
        # families run by layersim's explicit block loop (families.BLOCK_ENTRY)
        "gpt2": (transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=2,
                                                                       n_positions=64, initializer_range=0.2)),
                 text_batch()),
        "llama": (transformers.LlamaForCausalLM(transformers.LlamaConfig(**text, num_key_value_heads=1)), text_batch()),
        "mistral-window-3": (transformers.MistralForCausalLM(transformers.MistralConfig(
            **text, num_key_value_heads=1, sliding_window=3)), text_batch()),
        "qwen3": (transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**text, num_key_value_heads=1, head_dim=16)),
                  text_batch()),
        "bert": (transformers.BertForSequenceClassification(transformers.BertConfig(**text, num_labels=3)),
                 {**text_batch(), "token_type_ids": (torch.arange(7) > 3).long().expand(3, 7)}),
        "electra": (transformers.ElectraForSequenceClassification(transformers.ElectraConfig(
            **text, embedding_size=16, num_labels=3)), text_batch()),
        "roberta": (transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
            **text, num_labels=3, pad_token_id=0, max_position_embeddings=64)), text_batch()),
    }, my_adapter


CASES = ["mpt", "opt", "gpt-neox", "roberta-prenorm", "modernbert", "modernbert-mean", "timm-avg-pool",
         "timm-distilled", "user-module", "gpt2", "llama", "mistral-window-3", "qwen3", "bert", "electra", "roberta"]
EXPLICIT = {"gpt2", "llama", "mistral-window-3", "qwen3", "gpt-neox", "bert", "electra", "roberta"}


@pytest.mark.parametrize("name", CASES)
def test_every_family_is_read_exactly(name):
    models, my_adapter = cases()
    model, batch = models[name]
    model = randomize_norms(model)
    adapter = my_adapter(model) if name == "user-module" else adapt(model)  # made = self-checked
    if name != "user-module":  # an explicit loop where the family's entry is written out (and timm's), else hooks
        assert ("explicit loop" in adapter.structure()["blocks run by"]) == (name in EXPLICIT or "timm" in name)
    L = adapter.num_layers
    seen = []
    handles = [b.register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
               for b in adapter.block_modules()]
    with torch.no_grad(), eval_mode(model):
        try:
            own = model(**batch).logits if isinstance(batch, dict) else model(batch)
        finally:
            for h in handles:
                h.remove()
        hidden = adapter.hidden_states(batch)
        mask = hidden.mask
        assert len(seen) == L
        for l in range(1, L + 1):  # layer l is block l's output in the model's own forward
            assert torch.allclose(hidden.states[l - 1][mask], seen[l - 1][mask], atol=1e-5)
            part = adapter.hidden_states(batch, upto=l).states  # a truncated forward
            assert part.shape[0] == l and torch.allclose(part, hidden.states[:l], atol=1e-5)
        read = adapter.read(hidden)
        if adapter.vocabulary_readout:
            own = own[adapter.sample_mask(hidden, "tokens")]
        assert torch.allclose(read[-1], own, atol=1e-5)  # the reader on layer L is the model's prediction
        assert not torch.allclose(read[0], read[-1], atol=1e-3)  # and layer 1 is another reading


def test_wrong_assumptions_are_refused():
    models, my_adapter = cases()
    prenorm = randomize_norms(models["roberta-prenorm"][0])

    class ReadAsPostNorm(HFEncoder):  # the old reading of pre-norm encoders: no final norm
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.has_final_norm = self.norm_before_pool = False

    with pytest.raises(SelfCheckError, match="layer L is the model's prediction"):
        ReadAsPostNorm(prenorm)
    gap = randomize_norms(models["timm-avg-pool"][0])

    class PoolThenNorm(TimmViTAdapter):  # the old reading of timm ViTs with average pooling
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm_before_pool = False

    with pytest.raises(SelfCheckError, match="layer L is the model's prediction"):
        PoolThenNorm(gap)
    user = randomize_norms(models["user-module"][0])

    class WrongOrder(my_adapter):
        norm_before_pool = False

    with pytest.raises(SelfCheckError, match=r"MyModel.*head\(norm\(h_l\)\)"):
        WrongOrder(user)
    unchecked = WrongOrder(user, check=False)  # the documented switch: made, unchecked
    assert unchecked.num_layers == 3


def test_a_truncated_forward_that_returns_the_wrong_layer_is_refused():
    """The MPT/OPT failure of the old adapter: hidden_states(upto=l) gave block L's output as layer l."""
    model = randomize_norms(cases()[0]["mpt"][0])
    adapter = adapt(model)

    class LastBlockAsLayerL(type(adapter)):
        def hidden_states(self, batch, upto=None):
            hidden = super().hidden_states(batch)
            if upto is None or upto == self.num_layers:
                return hidden
            states = torch.cat([hidden.states[:upto - 1], hidden.states[-1:]])
            return type(hidden)(states, hidden.mask, hidden.input_ids)

    with pytest.raises(SelfCheckError, match=r"truncated forward.*upto=1"):
        LastBlockAsLayerL(model)


def test_the_check_leaves_the_global_rng_and_train_flags_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = randomize_norms(cases()[0]["gpt-neox"][0]).train()
    state = torch.random.get_rng_state()
    adapt(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(m.training for m in model.modules())
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), expected)


def test_structure_says_what_was_assumed():
    models, _ = cases()
    opt = adapt(randomize_norms(models["opt"][0]))
    info = opt.structure()
    assert info["final norm at"] == "decoder.final_layer_norm" and "decoder.project_out" in info["head"]
    assert info["blocks at"] == "OPTModel.decoder.layers" and info["family"] == "opt"
    gap = adapt(randomize_norms(models["timm-avg-pool"][0]))
    assert gap.structure()["norm before pooling"] is True and gap.readout_formula() == "head(pool(norm(h_l)))"


@pytest.mark.parametrize("name", ["gpt2", "bert", "electra"])
def test_the_explicit_loop_draws_dropout_as_the_models_own_forward(name):
    """In training mode (dropout on), the explicit loop consumes the random stream in the model's own order:
    with the same seed, every layer is bitwise the block output of the model's own forward (so training through
    the adapter trains exactly the model)."""
    model = randomize_norms(cases()[0][name][0]).train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.3
    adapter = adapt(model)
    batch = cases()[0][name][1]
    seen = []
    handles = [b.register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
               for b in adapter.block_modules()]
    torch.manual_seed(7)
    with torch.no_grad():
        try:  # a causal LM trains without a cache (with one, attention reads keys copied into it: 1e-6 apart)
            model(**batch, **({"use_cache": False} if adapter.vocabulary_readout else {}))
        finally:
            for h in handles:
                h.remove()
        torch.manual_seed(7)
        hidden = adapter.hidden_states(batch)
    assert model.training
    for l in range(adapter.num_layers):
        assert torch.equal(hidden.states[l], seen[l])
    torch.manual_seed(8)
    with torch.no_grad():
        other = adapter.hidden_states(batch)
    assert not torch.equal(other.states[-1], hidden.states[-1])  # dropout is on: another seed, other numbers


def test_decoding_past_a_sliding_window_is_refused_but_reading_is_exact():
    from layersim.models import DecoderSteps

    model = randomize_norms(cases()[0]["mistral-window-3"][0])
    adapter = adapt(model)  # self-checked on 8-token probes: the window of 3 is in effect
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        full = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
        causal = transformers.MistralForCausalLM(transformers.MistralConfig(**{
            **model.config.to_dict(), "sliding_window": None}))
        causal.load_state_dict(model.state_dict())
        unwindowed = causal.eval()(input_ids=ids, output_hidden_states=True).hidden_states[1]
        hidden = adapter.hidden_states({"input_ids": ids})
    assert not torch.allclose(full, unwindowed, atol=1e-4)  # the window changes the numbers here
    torch.testing.assert_close(hidden.states[0], full)
    torch.testing.assert_close(adapter.norm(hidden.states[-1]), own)
    with pytest.raises(NotImplementedError, match="sliding attention window \\(3\\)"):
        DecoderSteps(adapter)


def test_the_readmes_own_adapter_goes_through_the_report(tmp_path):
    """The README's user adapter, reported as the README says: layer L is the model's own prediction."""
    from layersim.report import report

    my_adapter, my_model = own_readme_adapter()
    torch.manual_seed(0)
    model = randomize_norms(my_model())
    x = torch.randn(40, 5, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(40) % 4
    r = report(my_adapter(model), (x, labels), out=tmp_path / "my-report", progress=False)
    with torch.no_grad():
        own = model(x)
    assert r.numbers["accuracy"][-1] == pytest.approx((own.argmax(-1) == labels).double().mean().item())
    assert r.numbers["final_prob"][-1] == pytest.approx(own.softmax(-1).max(-1).values.double().mean().item(), rel=1e-5)
    assert len(r.numbers["cos_to_last"]) == 3 and (tmp_path / "my-report" / "report.html").is_file()
    from layersim.report import ReportError

    with pytest.raises(ReportError, match=r"reads tensors .* give an \(N, 5, 8\) tensor"):
        report(my_adapter(model), progress=False)  # no default data for a user's model
    with pytest.raises(ReportError, match=r"shape \(40, 8\)"):
        report(my_adapter(model), x[:, 0], progress=False)
