"""``python -m layersim.report MODEL [--data SOURCE] [--n N] [--out DIR] [--device D]``: exit status 0 when
both files are written, 2 on bad input (one line on stderr; nothing written in --out)."""
from __future__ import annotations

import argparse
import sys

from ..models import POOLINGS
from .inputs import SOURCES, ReportError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m layersim.report",
                                description="The paper's analysis of any model: layer-wise COS/CKA, the last-layer "
                                            "classifier at every layer, saturation, minimal depth and FLOPs.")
    p.add_argument("model", help="a layersim model name (minilm-l6, smollm2-135m), or a local Hugging Face / timm "
                                 "folder")
    p.add_argument("--data", default=None, help=f"{', '.join(SOURCES)}, a text file (one text a line) or a folder "
                                                "of images (default: the model's modality's offline source)")
    p.add_argument("--n", type=int, default=None, help="number of inputs (default 1000; LM: 64 sequences)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence for a causal LM (default 128)")
    p.add_argument("--out", default=None, help="folder for report.json and report.html (default report-<model>)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--pooling", default=None, choices=POOLINGS,
                   help="the samples compared (default: what the model's head reads; a bare encoder's mean)")
    p.add_argument("--embeddings", action="store_true", help="add the embedding output as layer 0 to the COS and "
                                                             "CKA figures")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from pathlib import Path

    from transformers.utils import logging as hf_logging

    from .api import report

    hf_logging.disable_progress_bar()  # the report's own progress is enough; errors stay one line

    out = args.out or "report-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(args.model).name)
    if args.n is not None and args.n < 1:
        print("error: --n must be a positive number of inputs", file=sys.stderr)
        return 2
    try:
        result = report(args.model, args.data, n=args.n, out=out, device=args.device, seq_len=args.seq_len,
                        pooling=args.pooling, embeddings=args.embeddings)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{out}/report.html and {out}/report.json written ({result.info['seconds']:.1f} s)")
    return 0
