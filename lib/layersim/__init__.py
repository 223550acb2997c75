"""layersim: layer-wise similarity of transformer representations (Jiang, Zhou, Zhu; ICLR 2025).

Modules
-------
data        image and text sources with deterministic splits
models      transformers with a per-layer readout and adapters for timm / Hugging Face
extract     per-layer features and readout logits, cached on disk
metrics     sample-wise cosine (COS), the CKA family, saturation, layer-wise accuracy
regenerate  papermill batch runner over notebooks x profile, writes REPORT.md
plots       figure helpers shared by notebooks
"""

__version__ = "0.1.0"
