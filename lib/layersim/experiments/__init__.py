"""What the notebooks compute, beyond the metrics and the early-exit tools: one module per kind of experiment.

Every notebook begins with `start`, which gives it the recorder of its results and the feature cache:

>>> from layersim import experiments
>>> rec, cache_dir = experiments.start(output_dir, "07_aligned_accuracy", use_cache=use_cache)
>>> models = experiments.train_models("vit-fashion-mnist")          # trained once per config, then cached
>>> reads = {obj: experiments.run_readout(run, cache_dir=cache_dir) for obj, run in models.items()}

Modules (every public name is importable from ``layersim.experiments`` directly, except the figure helpers)
---------------------------------------------------------------------------------------------------------
* :mod:`~layersim.experiments.notebook`: ``start``.
* :mod:`~layersim.experiments.trained`: the standard, aligned and multi-exit models of a training recipe
  (``train_models``, ``recipe_names``) read out at every layer on its test split (``run_readout`` ->
  ``RunReadout``, ``run_inputs``), the per-exit accuracy table (``exit_accuracy_table``).
* :mod:`~layersim.experiments.features`: per-layer features of the notebooks' models (``load_layer_features``
  -> ``LayerFeatures``).
* :mod:`~layersim.experiments.similarity`: claim 2 (``similarity_trends``) and claim 3 (outlier injection,
  ``outlier_sweep``, ``massive_activation_samples``).
* :mod:`~layersim.experiments.geodesic`: claim 4 (``geodesic_trajectories``, ``fit_linear_classifier``,
  ``fraction_rising``, ``relative_step_lengths``).
* :mod:`~layersim.experiments.representations`: the PCA of the class means at every layer (Figure 1:
  ``class_mean_pca``, ``plot_class_means``, ``pick_layers``) and per-layer values averaged by group
  (``mean_by_group``).
* :mod:`~layersim.experiments.timing`: measured time of exiting at each layer (``time_fixed_exits``) and of
  real early exit (``measure_early_exit``, ``plain_forward``).
* :mod:`~layersim.experiments.elastic`: self-speculative decoding of a language model (notebook 11): draft
  acceptance by exit layer, teacher-forced (``draft_agreement_on``), prompts from test sequences
  (``prompts_from``), predicted beside measured speed-up over (E, k) (``speculation_table``), and
  transformers' ``assistant_early_exit`` as the peer baseline (``transformers_early_exit_speedup``).
* :mod:`~layersim.experiments.plots`: figure helpers shared by the notebooks (seaborn / matplotlib; imported
  on its own, ``from layersim.experiments import plots``).

The rank correlation the notebooks use is `layersim.metrics.spearman`, the device they run on
`layersim.device.resolve_device`.

Shapes: features (L, n, d) and logits (L, n, C) are stacked layer-first; layers are numbered 1..L in
everything a reader sees (tables, plots, group numbers).
"""
from .elastic import draft_agreement_on, prompts_from, speculation_table, transformers_early_exit_speedup
from .features import FEATURE_NORMS, TRAINED_PREFIX, LayerFeatures, load_layer_features
from .geodesic import Trajectories, fit_linear_classifier, fraction_rising, geodesic_trajectories, relative_step_lengths
from .notebook import FEATURE_CACHE, NotebookStart, start
from .representations import ClassMeanPCA, class_mean_pca, mean_by_group, pick_layers, plot_class_means
from .similarity import (OUTLIERS, OutlierSweep, SimilarityTrends, cos_cka_agreement, inject_outlier_dimensions,
                         inject_outlier_samples, massive_activation_samples, mean_pair_change, outlier_sweep, similarity_trends, typical_distance)
from .timing import measure_early_exit, plain_forward, time_fixed_exits
from .trained import (OBJECTIVE_LABELS, OBJECTIVES, RunReadout, exit_accuracy_table, recipe_names, run_inputs,
                      run_readout, train_models)

__all__ = ["start", "NotebookStart", "FEATURE_CACHE",
           "OBJECTIVES", "OBJECTIVE_LABELS", "train_models", "recipe_names", "RunReadout", "run_readout", "run_inputs",
           "exit_accuracy_table",
           "LayerFeatures", "load_layer_features", "FEATURE_NORMS", "TRAINED_PREFIX",
           "SimilarityTrends", "similarity_trends", "typical_distance", "inject_outlier_samples",
           "inject_outlier_dimensions", "mean_pair_change", "OutlierSweep", "outlier_sweep",
           "massive_activation_samples", "OUTLIERS", "cos_cka_agreement",
           "Trajectories", "geodesic_trajectories", "fit_linear_classifier", "fraction_rising", "relative_step_lengths",
           "ClassMeanPCA", "class_mean_pca", "plot_class_means", "pick_layers", "mean_by_group",
           "time_fixed_exits", "plain_forward", "measure_early_exit",
           "draft_agreement_on", "prompts_from", "speculation_table", "transformers_early_exit_speedup"]
