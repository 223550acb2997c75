"""Early exit: what every layer of a model knows, when a sample may stop, what stopping costs and saves.

Two ways to measure "elastic inference" (one model, any depth budget):

- from cached per-layer outputs (cheap to sweep, as Shallow-Deep Networks and Zero-Time-Waste evaluate
  their exits): `layerwise_accuracy`, `final_prediction_prob`, `saturation`, `overthinking`,
  `minimal_depth`, `calibration`; exit policies (`ConfidenceExit`, `EntropyExit`, `PatienceExit`,
  `FixedExit`) run by `simulate`, swept by `sweep` / `sweep_policies`, compared by `pareto_front`;
- from real forward passes that stop at the exit (honest about time): `exit_at_layer` (a fixed exit for
  the batch), `early_exit` (per sample: exited samples leave the batch), `generate_at_layer` (a causal
  LM read out at layer l), `paired_speedup`; FLOPs counted on the real modules by `count_flops`;
- for language models, self-speculative decoding (`self_speculative_generate`: layers 1..E draft with the
  shared head, the whole model verifies, the output is the model's own), its plain baseline with the same
  cache (`greedy_generate`), and its speed-up predicted from one teacher-forced pass (`draft_agreement`,
  `measure_decode_costs`, `predict_speedup`) and measured (`measure_speedup`); and per-token confidence exit
  for generation (CALM: `confidence_generate`, swept by `confidence_exit_sweep`; not lossless).

Parameter savings of one shared classifier against L: `parameter_savings`, `savings_table`.

>>> from layersim.early_exit import (per_layer_logits, sweep_policies, pareto_front, count_flops,
...                                  early_exit, ConfidenceExit)
>>> logits = per_layer_logits(vit, images)                     # (L, n, C), shared head
>>> flops = count_flops(vit, images[:64])
>>> table = sweep_policies(logits, labels, flops=flops)        # accuracy vs expected depth / FLOPs
>>> front = pareto_front(table, cost="expected_flops")
>>> result = early_exit(vit, images, ConfidenceExit(0.9), labels=labels)   # real per-sample exits

Layers are numbered 1..L everywhere; per-layer outputs are stacked layer-first (L, n, ...).
"""
from .analysis import (Calibration, LayerSummaries, Overthinking, SaturationStats, as_summaries, calibration,
                       final_prediction_prob, layerwise_accuracy, minimal_depth, overthinking, saturation,
                       saturation_layer, summarize)
from .flops import FlopsProfile, count_flops, flop_counter
from .inference import early_exit, exit_at_layer, generate_at_layer, paired_speedup, per_layer_logits
from .speculative import Generation, greedy_generate, prompt_ids, self_speculative_generate
from .token_exit import confidence_exit_sweep, confidence_generate
from .speedup import draft_agreement, first_divergence, measure_decode_costs, measure_speedup, predict_speedup
from .params import AUTHORS_SAVINGS, NOMINAL_SIZES, ParameterSavings, parameter_savings, savings_table
from .policies import (POLICIES, ConfidenceExit, EntropyExit, ExitPolicy, ExitResult, FixedExit, PatienceExit,
                       choose_by_accuracy_drop, make_policy, pareto_front, simulate, sweep, sweep_policies)
from ..models import BlockState

__all__ = ["Calibration", "LayerSummaries", "Overthinking", "SaturationStats", "as_summaries", "calibration",
           "final_prediction_prob", "layerwise_accuracy", "minimal_depth", "overthinking", "saturation",
           "saturation_layer", "summarize", "FlopsProfile", "count_flops", "flop_counter", "early_exit",
           "exit_at_layer", "generate_at_layer", "paired_speedup", "per_layer_logits",
           "AUTHORS_SAVINGS", "NOMINAL_SIZES", "ParameterSavings", "parameter_savings", "savings_table", "POLICIES",
           "ConfidenceExit", "EntropyExit", "ExitPolicy", "ExitResult", "FixedExit", "PatienceExit",
           "choose_by_accuracy_drop", "make_policy", "pareto_front", "simulate", "sweep", "sweep_policies",
           "BlockState", "Generation", "greedy_generate", "prompt_ids", "self_speculative_generate",
           "confidence_generate", "confidence_exit_sweep", "draft_agreement", "first_divergence", "measure_decode_costs", "measure_speedup", "predict_speedup"]
