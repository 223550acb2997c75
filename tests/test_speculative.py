"""Self-speculative decoding (layersim.early_exit.speculative / speedup) and the cached block loop it runs on
(layersim.models.decoder): identical to the model's own greedy decoding, sampling that keeps the model's
distribution, predictions with known values, clear errors."""
import math

import pytest
import torch
import transformers

from layersim.early_exit import (draft_agreement, first_divergence, greedy_generate, measure_decode_costs,
                                 measure_speedup, predict_speedup, self_speculative_generate)
from _helpers import one_thread
from layersim.models import DecoderSteps, HFCausalLM, SelfCheckError, decoder_steps, load_model

transformers.logging.set_verbosity_error()
V = 61


def tiny(family: str, *, dtype=torch.float64, layers: int = 4, vocab: int = V, init: float = 0.02, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=init)
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=layers, n_head=2, n_positions=96, **common)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96,
                                          **common)
        model = transformers.LlamaForCausalLM(config)
    return HFCausalLM(model.to(dtype).eval())


def prompts(n: int, vocab: int = V, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (1, int(torch.randint(1, 9, (), generator=g))), generator=g) for _ in range(n)]


# ---- greedy: identical to the model's own generate ---------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_self_speculation_equals_generate_token_for_token(family):
    lm = tiny(family)
    L, checked = lm.num_layers, 0
    for prompt in prompts(8):
        want = lm.model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)[0, prompt.shape[1]:]
        assert torch.equal(greedy_generate(lm, prompt, max_new_tokens=24, stop_at_eos=False).new_ids, want)
        for E in range(1, L):
            for k in (1, 2, 4):
                out = self_speculative_generate(lm, prompt, exit_layer=E, draft_tokens=k, max_new_tokens=24,
                                                stop_at_eos=False)
                assert torch.equal(out.new_ids, want), (E, k)
                assert out.accepted <= out.drafted and out.verify_passes >= math.ceil(23 / (k + 1))
                assert out.verify_passes == len(out.accepted_per_pass) and sum(out.accepted_per_pass) == out.accepted
                checked += 1
    assert checked == 8 * (L - 1) * 3


def test_an_always_right_draft_accepts_everything():
    """A 2-layer model whose block 2 adds nothing (its output projections zeroed): layer 1 read by the shared
    head is the model's own prediction, so every draft is accepted and each pass yields k + 1 tokens."""
    lm = tiny("llama", layers=2)
    block = lm.model.model.layers[1]
    torch.nn.init.zeros_(block.self_attn.o_proj.weight)
    torch.nn.init.zeros_(block.mlp.down_proj.weight)
    out = self_speculative_generate(lm, prompts(1)[0], exit_layer=1, draft_tokens=3, max_new_tokens=21,
                                    stop_at_eos=False)
    assert out.acceptance_rate == 1.0 and out.tokens_per_pass == 4.0 and out.verify_passes == 5


def test_stops_after_the_end_of_sequence_token_as_greedy_does():
    lm = tiny("gpt2", init=0.3)
    for prompt in prompts(6):
        plain = greedy_generate(lm, prompt, max_new_tokens=40)
        spec = self_speculative_generate(lm, prompt, exit_layer=2, draft_tokens=3, max_new_tokens=40)
        assert torch.equal(spec.new_ids, plain.new_ids)
        eos = (plain.new_ids == 0).nonzero()
        assert len(eos) == 0 or int(eos[0, 0]) == len(plain.new_ids) - 1


def test_smollm2_self_speculation_is_its_own_greedy_decoding():
    """The shipped SmolLM2-135M in float32: identical to transformers' greedy generate, or a divergence at
    a near-tie (reported with its logit gap)."""
    lm = load_model("smollm2-135m")
    prompt = "The history of the city begins"
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    want = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             eos_token_id=None)[0, ids.shape[1]:]
    for E in (20,):
        out = self_speculative_generate(lm, prompt, exit_layer=E, draft_tokens=3, max_new_tokens=12,
                                        stop_at_eos=False)
        gap = first_divergence(lm, prompt, want, out.new_ids)
        assert gap is None or abs(gap["logit_gap"]) < 1e-3, gap
        assert out.text == lm.tokenizer.decode(out.new_ids)


# ---- the cached block loop ---------------------------------------------------------------------------------
def test_decoder_steps_in_uneven_pieces_equal_the_full_forward():
    lm = tiny("gpt2")
    steps = decoder_steps(lm)
    assert decoder_steps(lm) is steps  # made and checked once per adapter
    ids = torch.randint(0, V, (1, 12), generator=torch.Generator().manual_seed(3))
    want = lm.model(ids).logits
    cache = steps.new_cache()
    a = steps.blocks(steps.embed(ids[:, :7], 0), 1, 4, cache, 0)
    early = steps.blocks(steps.embed(ids[:, 7:], 7), 1, 1, cache, 7)
    assert steps.length(cache, 1) == 12 and steps.length(cache, 2) == 7
    b = steps.blocks(early, 2, 4, cache, 7)
    torch.testing.assert_close(steps.read(torch.cat([a, b], 1), 4), want, rtol=0, atol=1e-10)
    steps.keep(cache, 9)
    assert [steps.length(cache, l) for l in range(1, 5)] == [9] * 4
    with pytest.raises(ValueError, match="holds 9 positions, but the new tokens start at position 12"):
        steps.blocks(steps.embed(ids[:, :1], 12), 1, 4, cache, 12)


def test_decoder_steps_refuse_a_wrong_preparation_by_the_check():
    class NoPositions(DecoderSteps):
        def embed(self, ids, start):  # forgets GPT-2's learned position embeddings
            return self.base.wte(ids)

    with pytest.raises(SelfCheckError, match="differs from the model's own"):
        NoPositions(tiny("gpt2"))


def test_decoder_steps_refuse_families_and_models_they_do_not_know():
    config = transformers.OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    ffn_dim=64, max_position_embeddings=64)
    opt = HFCausalLM(transformers.OPTForCausalLM(config).eval())
    with pytest.raises(NotImplementedError, match="'opt'.*layersim.models.decoder.FAMILIES"):
        self_speculative_generate(opt, torch.tensor([[1, 2]]), exit_layer=1)
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)).eval()
    with pytest.raises(ValueError, match="not a causal language model"):
        self_speculative_generate(bert, torch.tensor([[1, 2]]), exit_layer=1)


# ---- sampling keeps the full model's distribution -----------------------------------------------------------
def _joint_probabilities(lm, prompt, n: int) -> torch.Tensor:
    """(V,)*n exact probabilities of the next n tokens under the full model (softmax, temperature 1)."""
    vocab = lm.num_classes
    grid = torch.cartesian_prod(*[torch.arange(vocab)] * n)  # (V^n, n)
    ids = torch.cat([prompt.expand(len(grid), -1), grid], 1)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits.double(), -1)
    T = prompt.shape[1]
    picked = logp[:, T - 1:T - 1 + n].gather(2, grid[:, :, None])[:, :, 0]
    return picked.sum(1).exp()


def _chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    from scipy.stats import chisquare

    keep = probs * counts.sum() >= 5  # pool the rare cells into one
    f_obs = torch.cat([counts[keep], counts[~keep].sum()[None]]).double()
    f_exp = torch.cat([probs[keep], probs[~keep].sum()[None]]) * counts.sum()
    return float(chisquare(f_obs.numpy(), f_exp.numpy()).pvalue)


def test_sampling_keeps_the_full_models_distribution_and_the_test_has_power(monkeypatch):
    """Three tokens sampled with E=1, k=2 (the first from the prompt's pass, the second and third through the
    draft/verify rule) follow the full model's joint distribution: chi-square over the V^3 = 64 outcomes,
    2,000 draws, level 0.001. Power: the same test on a broken sampler that accepts every draft (tokens 2-3
    then come from layer 1's distribution; total variation about 0.4 from the model's here) must reject at
    p < 1e-6 (at that distance and 2,000 draws its power is essentially 1)."""
    from layersim.early_exit import speculative

    lm = tiny("gpt2", layers=2, vocab=4, init=0.8, dtype=torch.float64, seed=4)
    prompt = torch.tensor([[1, 3]])
    probs = _joint_probabilities(lm, prompt, 3)

    def draw(n=2000):
        g = torch.Generator().manual_seed(0)
        counts = torch.zeros(4 ** 3)
        with one_thread():
            for _ in range(n):
                t = self_speculative_generate(lm, prompt, exit_layer=1, draft_tokens=2, max_new_tokens=3,
                                              stop_at_eos=False, temperature=1.0, generator=g).new_ids
                counts[int(t[0]) * 16 + int(t[1]) * 4 + int(t[2])] += 1
        return counts

    assert _chi_square_p(draw(), probs) > 1e-3
    monkeypatch.setattr(speculative, "_accept_sampled",
                        lambda drafts, q, p, g: (len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=g))))
    assert _chi_square_p(draw(), probs) < 1e-6


# ---- predictions ------------------------------------------------------------------------------------------
def test_draft_agreement_is_the_share_agreeing_with_the_last_layer():
    preds = torch.tensor([[1, 2, 3, 4], [1, 0, 0, 0], [1, 2, 3, 0]])
    assert draft_agreement(preds).tolist() == [0.75, 0.5, 1.0]


def test_predicted_speedup_by_hand():
    costs = {"block": [1.0, 1.5, 2.0, 2.5], "call": [0.5, 0.5, 1.0, 1.0], "head": [2.0, 2.0, 3.0, 3.0],
             "num_layers": 4, "context": 8}
    rows = predict_speedup([0.5, 0.8, 0.9, 1.0], costs, exit_layers=[1, 3], draft_tokens=[1, 3])
    r = {(x["exit_layer"], x["draft_tokens"]): x for x in rows}
    # E=1, k=1: tokens 1 + .5; cost (.5+1+2) + (.5+1) + (.5 + 3*1.5) + 2 = 12; plain .5 + 4*1 + 2 = 6.5
    assert r[1, 1]["tokens_per_pass"] == 1.5 and r[1, 1]["speedup"] == pytest.approx(1.5 * 6.5 / 12)
    assert r[1, 1]["acceptance"] == 0.5 and r[1, 1]["agreement"] == 0.5
    # E=3, k=3: tokens 1 + .9 + .81 + .729; cost 3*(.5+3+2) + (.5+3) + (1 + 1*2.5) + 3 = 26.5
    assert r[3, 3]["speedup"] == pytest.approx(3.439 * 6.5 / 26.5)
    assert r[3, 3]["acceptance"] == pytest.approx((0.9 + 0.81 + 0.729) / 3)
    assert predict_speedup([1, 1, 1, 1], costs, exit_layers=[2], draft_tokens=[3])[0]["tokens_per_pass"] == 4
    with pytest.raises(ValueError, match="one value per layer"):
        predict_speedup([0.5, 1.0], costs)
    with pytest.raises(ValueError, match="max_draft"):
        predict_speedup([0.5, 0.8, 0.9, 1.0], costs, exit_layers=[1], draft_tokens=[4])


def test_measured_costs_and_speedup_on_a_tiny_model():
    lm = tiny("llama", dtype=torch.float32)
    costs = measure_decode_costs(lm, max_draft=2, context=16, repeats=2)
    assert len(costs["block"]) == len(costs["call"]) == len(costs["head"]) == 3
    assert min(costs["block"] + costs["head"]) > 0 and min(costs["call"]) >= 0
    out = measure_speedup(lm, prompts(2), exit_layer=2, draft_tokens=2, max_new_tokens=10, repeats=1)
    assert out["identical"] and out["divergences"] == [] and out["speedup"] > 0 and out["new_tokens"] == 20
    assert 0 <= out["acceptance_rate"] <= 1


def test_first_divergence_reports_the_logit_gap():
    lm = tiny("gpt2")
    prompt = torch.tensor([[4, 5]])
    plain = greedy_generate(lm, prompt, max_new_tokens=6, stop_at_eos=False).new_ids
    other = plain.clone()
    other[3] = (other[3] + 1) % V
    gap = first_divergence(lm, prompt, plain, other)
    with torch.no_grad():
        logits = lm.model(torch.cat([prompt[0], plain[:3]])[None]).logits[0, -1]
    assert gap["position"] == 3 and gap["logit_gap"] == pytest.approx(float(logits[plain[3]] - logits[other[3]]))
    assert gap["logit_gap"] > 0 and first_divergence(lm, prompt, plain, plain) is None


# ---- bad input --------------------------------------------------------------------------------------------
def test_bad_input_is_a_clear_error():
    lm = tiny("gpt2")
    p = torch.tensor([[1, 2]])
    for E in (0, 4, 2.5, True):
        with pytest.raises(ValueError, match="exit_layer"):
            self_speculative_generate(lm, p, exit_layer=E)
    with pytest.raises(ValueError, match="draft_tokens"):
        self_speculative_generate(lm, p, exit_layer=1, draft_tokens=0)
    with pytest.raises(ValueError, match="exceeds the context of .* \\(96 positions\\)"):
        self_speculative_generate(lm, torch.ones(1, 90, dtype=torch.long), exit_layer=1, max_new_tokens=10)
    with pytest.raises(ValueError, match="temperature"):
        self_speculative_generate(lm, p, exit_layer=1, temperature=-1)
    with pytest.raises(ValueError, match="batch size 1"):
        self_speculative_generate(lm, torch.ones(2, 3, dtype=torch.long), exit_layer=1)
    with pytest.raises(ValueError, match=r"\[0, 61\)"):
        greedy_generate(lm, torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match="no tokenizer"):
        greedy_generate(lm, "text")
    one = tiny("gpt2", layers=1)
    with pytest.raises(ValueError, match="one layer"):
        self_speculative_generate(one, p, exit_layer=1)


# ---- per-token confidence exit (CALM) ------------------------------------------------------------------------
def test_confidence_exit_at_threshold_one_is_greedy_and_lower_thresholds_exit_earlier():
    from layersim.early_exit import confidence_exit_sweep, confidence_generate

    lm = tiny("llama")
    for prompt in prompts(3):
        plain = greedy_generate(lm, prompt, max_new_tokens=16, stop_at_eos=False)
        full = confidence_generate(lm, prompt, threshold=1.0, max_new_tokens=16, stop_at_eos=False)
        assert torch.equal(full.new_ids, plain.new_ids) and full.exit_layers == [4] * 16
    rows = confidence_exit_sweep(lm, prompts(3), [0.02, 1.0], max_new_tokens=10)
    assert rows[0]["mean exit layer"] < rows[1]["mean exit layer"] == 4.0
    assert rows[1]["agreement with greedy"] == 1.0 and rows[1]["tokens before the first difference"] == 10
    with pytest.raises(ValueError, match="threshold"):
        confidence_generate(lm, prompts(1)[0], threshold=0)


def test_confidence_exit_where_the_deeper_block_adds_nothing_is_exact():
    """Block 2 of 2 adds nothing (output projections zeroed): every token may leave at layer 1, the skipped
    block's cache comes from the exit state (which is block 2's input), and the output is the model's."""
    from layersim.early_exit import confidence_generate

    lm = tiny("gpt2", layers=2, init=0.5)
    block = lm.model.transformer.h[1]
    for linear in (block.attn.c_proj, block.mlp.c_proj):
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
    prompt = prompts(1)[0]
    out = confidence_generate(lm, prompt, threshold=1e-6, max_new_tokens=12, stop_at_eos=False)
    assert out.exit_layers == [2] + [1] * 11
    assert torch.equal(out.new_ids, greedy_generate(lm, prompt, max_new_tokens=12, stop_at_eos=False).new_ids)


def test_propagated_keys_and_values_are_checked_against_the_blocks_own():
    class NoInputNorm(DecoderSteps):
        def _keys_values(self, block, h, rotary):  # forgets the block's input norm
            attn = block.attn
            _, keys, values = attn.c_attn(h).split(attn.split_size, dim=2)
            shape = (*keys.shape[:-1], -1, attn.head_dim)
            return keys.view(shape).transpose(1, 2), values.view(shape).transpose(1, 2)

    with pytest.raises(SelfCheckError, match="another state"):
        NoInputNorm(tiny("gpt2"))
    DecoderSteps(tiny("llama"))  # the rotary family's keys pass the same check


def test_the_transformers_peer_leaves_the_model_as_it_was():
    """transformers' assistant_early_exit fails on GPT-2 and leaves config.n_layer = E behind; the peer
    baseline reports the failure and restores the config, so decoding afterwards is still the model's."""
    from layersim.experiments import transformers_early_exit_speedup

    lm = tiny("gpt2", dtype=torch.float32)
    before = greedy_generate(lm, torch.tensor([[3, 4]]), max_new_tokens=6, stop_at_eos=False).new_ids
    peer = transformers_early_exit_speedup(lm, [torch.tensor([[3, 4]])], exit_layer=2, draft_tokens=2,
                                           max_new_tokens=6, repeats=1)
    assert ("error" in peer) or peer["identical"]
    assert lm.model.config.n_layer == 4
    assert torch.equal(greedy_generate(lm, torch.tensor([[3, 4]]), max_new_tokens=6, stop_at_eos=False).new_ids, before)
    llama = tiny("llama", dtype=torch.float32)
    peer = transformers_early_exit_speedup(llama, [torch.tensor([[3, 4]])], exit_layer=2, draft_tokens=2,
                                           max_new_tokens=6, repeats=1)
    assert peer["identical"] is True and peer["speedup"] > 0


def more_families():
    torch.manual_seed(0)
    common = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  max_position_embeddings=96, bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.3)
    t = transformers
    return {"gemma": t.GemmaForCausalLM(t.GemmaConfig(**common, num_key_value_heads=2, head_dim=8)),
            "olmo": t.OlmoForCausalLM(t.OlmoConfig(**common, num_key_value_heads=2)),
            "phi3": t.Phi3ForCausalLM(t.Phi3Config(**common, num_key_value_heads=2)),
            "gpt-neox": t.GPTNeoXForCausalLM(t.GPTNeoXConfig(**common, rotary_pct=0.5))}


@pytest.mark.parametrize("family", ["gemma", "olmo", "phi3", "gpt-neox"])
def test_more_decoder_families_decode_exactly(family):
    """Gemma (scaled embeddings), OLMo, Phi-3 (one fused qkv projection) and GPT-NeoX (rotary on half of each
    head, its own names): the cached loop is self-checked (pieces, and the keys and values CALM propagates), and
    greedy self-speculative decoding equals the model's own generate."""
    lm = HFCausalLM(more_families()[family].double().eval())
    assert "explicit loop" in lm.structure()["blocks run by"]
    steps = decoder_steps(lm)
    assert steps.checked
    for prompt in prompts(3):
        want = lm.model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)[0, prompt.shape[1]:]
        for E, k in ((1, 2), (2, 3)):
            out = self_speculative_generate(lm, prompt, exit_layer=E, draft_tokens=k, max_new_tokens=12,
                                            stop_at_eos=False)
            assert torch.equal(out.new_ids, want), (E, k)
