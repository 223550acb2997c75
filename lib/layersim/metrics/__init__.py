"""Layer-wise similarity metrics: sample-wise cosine (COS), the CKA family, streaming accumulators, and
layer-wise readouts.

Modules (every public name is importable from ``layersim.metrics`` directly)
---------------------------------------------------------------------------
* :mod:`~layersim.metrics.cos`: ``cos_similarity``, ``cos_per_sample`` (the paper's COS).
* :mod:`~layersim.metrics.cka_family`: ``cka``, ``hsic``, ``MinibatchCKA`` (linear / RBF, biased /
  debiased, Gram or feature form). Not named ``cka.py``, so that ``layersim.metrics.cka`` stays the
  function.
* :mod:`~layersim.metrics.streaming`: ``StreamingMean``, ``StreamingCOS``, ``StreamingCKA`` (batch by
  batch; ``merge`` and ``all_reduce_`` for torch.distributed).
* :mod:`~layersim.metrics.readout`: ``saturation_layer``, ``layerwise_accuracy`` and the checks they
  share with the early-exit code (``as_predictions``, ``check_labels``).
* :mod:`~layersim.metrics.layerwise`: ``similarity_to_last``, ``similarity_by_gap``,
  ``trajectory_straightness``.
* :mod:`~layersim.metrics.rank`: ``spearman`` (a rank correlation that is NaN, not a warning, where none
  exists).
* ``_stack`` (input checking and stacking) and ``_reduce`` (merging accumulators) are internal.

Conventions
-----------
* ``feats`` is a stack of per-layer features: an ``(L, n, d)`` torch tensor or numpy array (L layers,
  n samples, d features per sample), or a sequence of L arrays shaped ``(n, d_l)``. A sequence may mix
  widths for CKA (e.g. the stages of a CNN); COS needs one width. ``other`` is a second stack over the
  *same n samples* (e.g. another model); its widths may differ from ``feats`` for CKA.
* Layers are indexed 0..L-1 in tensors (row ``i`` of a result is layer ``i + 1`` for a reader);
  :func:`saturation_layer` returns layers numbered 1..L, as plots and tables show them.
* Every similarity returned here is "larger means more similar" and lies in its range: COS in
  [-1, 1], biased CKA in [0, 1], debiased CKA in [-1, 1]. Results are float64 tensors on the
  input's device, whatever the input dtype (float16/bfloat16 are computed in float32, integers and
  booleans in float64); means are always accumulated in float64.
* Bad input raises ``ValueError`` naming the problem and the layer: wrong ndim, mismatched sample
  counts, NaN/Inf, a constant (zero-variance) layer where centring makes it undefined, too few
  samples, labels out of range. Features of extreme magnitude (float32 around 1e20 or 1e-25,
  float64 around 1e200) give the same values as well-scaled ones: layers are rescaled by exact powers
  of two where the arithmetic would overflow or underflow.
"""
from .cka_family import MinibatchCKA, cka, hsic
from .cos import cos_per_sample, cos_similarity
from .layerwise import similarity_by_gap, similarity_to_last, trajectory_straightness
from .rank import spearman
from .readout import layerwise_accuracy, readout_stats, saturation_layer
from .streaming import StreamingCKA, StreamingCOS, StreamingMean

__all__ = [
    "cos_similarity",
    "cos_per_sample",
    "cka",
    "hsic",
    "saturation_layer",
    "layerwise_accuracy",
    "readout_stats",
    "similarity_to_last",
    "similarity_by_gap",
    "trajectory_straightness",
    "spearman",
    "StreamingMean",
    "StreamingCOS",
    "StreamingCKA",
    "MinibatchCKA",
]
