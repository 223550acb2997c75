"""layersim: layer-wise similarity of transformer representations (Jiang, Zhou, Zhu; ICLR 2025).

Modules
-------
data         image and text sources with deterministic splits, the tokenizer pipeline
models       transformers with a per-layer readout and adapters for timm / Hugging Face
extract      per-layer features and readout logits, cached on disk
metrics      sample-wise cosine (COS), the CKA family, saturation, layer-wise accuracy, rank correlation
experiments  what the notebooks compute (trained models read out, similarity trends, outliers, geodesics,
             class-mean PCA, timing), their set-up (`experiments.start`) and figure helpers (plots)
runner       papermill batch runner over notebooks x profile, writes REPORT.md and the gallery; record:
             what a notebook records
device       the torch device a notebook's ``device`` parameter names
"""

__version__ = "0.1.0"
