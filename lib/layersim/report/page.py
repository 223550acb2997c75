"""The report as a page: figures (matplotlib, embedded as base64 PNG) and one self-contained HTML document,
each figure with one sentence on how to read it. Nothing is fetched when the page opens."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..experiments.plots import layer_heatmap, per_layer_curves

STYLE = """
.layersim-report { font-family: system-ui, sans-serif; max-width: 1100px; color: #222; }
.layersim-report table { border-collapse: collapse; margin: .5em 0; }
.layersim-report td, .layersim-report th { border: 1px solid #ccc; padding: .2em .5em; text-align: left; }
.layersim-report th { background: #f3f3f3; } .layersim-report .how { color: #444; font-style: italic; }
.layersim-report figure { margin: .5em 0; } .layersim-report img { max-width: 100%; }
.layersim-report .note { color: #8a4b00; }
"""


def _png(fig) -> str:
    for ax in fig.axes:
        if ax.get_xlabel() in ("layer", "saturation layer") and not ax.collections:  # curves and bars
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def figures(numbers: dict) -> dict:
    """{name: (base64 PNG, title, how to read it)} for every figure the numbers allow."""
    out = {}
    first = numbers.get("first_layer", 1)
    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2)
    layer_heatmap(np.array(numbers["cos"]), axes[0], title="COS (sample-wise cosine)", vmin=min(0, np.min(numbers["cos"])),
                  first=first)
    layer_heatmap(np.array(numbers["cka"]), axes[1], title="linear CKA", vmin=0, first=first)
    out["similarity"] = (_png(fig), "Similarity of every pair of layers",
                         "Bright cells are pairs of layers whose representations are alike; a band that fades away "
                         "from the diagonal means similarity falls as layers lie further apart"
                         + ("; layer 0 is the embedding output." if first == 0 else "."))
    fig = Figure(figsize=(5, 3.3))
    ax = fig.subplots()
    per_layer_curves({"COS": numbers["cos_to_last"], "CKA": numbers["cka_to_last"]}, ax,
                     ylabel="similarity to the last layer", first=first)
    out["to_last"] = (_png(fig), "Similarity to the last layer",
                      "A curve rising steadily to 1 means each layer moves the representation closer to the final "
                      "one; a flat stretch means layers that change little.")
    if not numbers.get("readout"):
        return out
    curves = {"agreement with the final prediction": numbers["agreement_with_final"]}
    if "accuracy" in numbers:
        curves["next-token accuracy" if "perplexity" in numbers else "accuracy"] = numbers["accuracy"]
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    per_layer_curves(curves, ax, ylabel="share of samples")
    depth = numbers["minimal_depth"]["layer"]
    ax.axvline(depth, color="grey", ls="--", lw=1)
    ax.text(depth, ax.get_ylim()[1], f" minimal depth {depth}", va="top", fontsize=8, color="grey")
    out["readout"] = (_png(fig), "The last-layer classifier read at every layer (logit lens)",
                      "Each point is what the model's own head predicts from that layer alone; the dashed line is "
                      "the first layer within 1 % of the final value, where an exit would lose almost nothing.")
    if "perplexity" in numbers:
        fig = Figure(figsize=(5, 3.3))
        ax = fig.subplots()
        per_layer_curves({"perplexity": numbers["perplexity"]}, ax, ylabel="perplexity (log scale)")
        ax.set_yscale("log")
        out["perplexity"] = (_png(fig), "Next-token perplexity at every layer",
                             "Lower is better: how surprised the head is by the true next token when it reads "
                             "that layer; it should fall towards the last layer.")
    fig = Figure(figsize=(5, 3.3))
    ax = fig.subplots()
    per_layer_curves({"mean probability": numbers["final_prob"]}, ax, ylabel="probability of the final prediction")
    out["final_prob"] = (_png(fig), "Probability of the final prediction per layer",
                         "How much probability each layer already gives to the answer the whole model will give; "
                         "high early values mean the answer was found early.")
    hist = np.array(numbers["saturation_histogram"], dtype=float)
    fig = Figure(figsize=(5, 3.3))
    ax = fig.subplots()
    ax.bar(np.arange(1, len(hist) + 1), hist / max(hist.sum(), 1))
    ax.set_xlabel("saturation layer")
    ax.set_ylabel("share of samples")
    ax.set_title(f"early saturation: {numbers['early_saturation']:.1%}")
    out["saturation"] = (_png(fig), "Saturation histogram",
                         "A sample saturates at the first layer from which every layer predicts the final answer; "
                         "mass left of the last bar is early saturation (an exit there changes nothing).")
    return out


def _table(rows: dict) -> str:
    e = html.escape
    return "<table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows.items()) + "</table>"


def _fmt(value, digits=3) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def summary_rows(info: dict, numbers: dict) -> dict:
    rows = {"model": info["model"], "data": info["data"], "inputs": info["inputs"],
            "samples compared": f"{numbers['samples']} ({numbers['pooling']} pooling, features: "
                                f"{numbers['feature_norm']})", "time": f"{info['seconds']:.1f} s on {info['device']}"}
    if "timing" in numbers:
        t = numbers["timing"]
        rows["cost of reading every layer"] = (
            f"blocks {t['blocks_over_forward']:.2f}x a plain forward of the model"
            + (f"; the head at every layer {t['heads_s']:.2f} s more" if numbers.get("readout") else "")
            + f" (batch {t['batch'] + 1}: {t['plain_forward_s']:.2f} s plain, {t['read_s']:.2f} s read)")
    if numbers.get("readout"):
        md, flops = numbers["minimal_depth"], numbers["flops"]
        rows["minimal depth"] = (f"layer {md['layer']} of {numbers['layers']} reaches {_fmt(md['value'])} "
                                 f"({md['basis']}; the last layer {_fmt(md['final'])})")
        if flops["available"]:
            rows["exiting there saves"] = (f"{flops['saved_fraction']:.1%} of the FLOPs "
                                           f"({_fmt(flops['exit'])} instead of {_fmt(flops['full'])} per sample)")
        else:
            rows["FLOPs"] = f"not counted: {flops['why']}"
        rows["early saturation"] = f"{numbers['early_saturation']:.1%} of samples"
        if "accuracy" in numbers:
            rows["last-layer accuracy"] = _fmt(numbers["accuracy"][-1])
        if "perplexity" in numbers:
            rows["last-layer perplexity"] = _fmt(numbers["perplexity"][-1])
    return rows


def _examples(numbers: dict) -> str:
    e = html.escape
    parts = []
    for ex in numbers.get("examples", []):
        for pos in ex["positions"]:
            parts.append(f"<p>Sequence {ex['sequence']}, after <code>{e(pos['context'])}</code> (true next: "
                         f"<code>{e(pos['next'])}</code>)</p><table><tr><th>layer</th><th>top tokens (probability)</th></tr>")
            for l, (toks, probs) in enumerate(zip(pos["top_tokens"], pos["top_probs"]), start=1):
                cells = ", ".join(f"<code>{e(t)}</code> {p:.2f}" for t, p in zip(toks[:3], probs[:3]))
                parts.append(f"<tr><td>{l}</td><td>{cells}</td></tr>")
            parts.append("</table>")
    return "".join(parts)


def render_html(info: dict, numbers: dict, figs: dict, *, full_page: bool = True) -> str:
    """The report as HTML: a whole page (`full_page`) or a fragment for Jupyter."""
    e = html.escape
    body = [f"<div class='layersim-report'><h1>layersim report: {e(info['model'])}</h1>",
            f"<p>{e(info['describe'])}</p>", _table(summary_rows(info, numbers))]
    body += [f"<p class='note'>{e(n)}</p>" for n in info["notes"]]
    if not numbers.get("readout"):
        body.append(f"<p class='note'>No readout: {e(info['no_readout'])}</p>")
    for name, (png, title, how) in figs.items():
        body.append(f"<h2>{e(title)}</h2><p class='how'>{e(how)}</p><figure><img id='fig-{name}' "
                    f"alt='{e(title)}' src='data:image/png;base64,{png}'></figure>")
    if numbers.get("examples"):
        body.append("<h2>Top tokens at every layer</h2><p class='how'>What the head would say next if the model "
                    "stopped at each layer, for a few positions of the first sequences.</p>" + _examples(numbers))
    body.append("<h2>The model as read</h2><p class='how'>What layersim assumed about the model (checked against "
                "its own output when it was loaded).</p>" + _table(info["structure"]))
    body.append("</div>")
    fragment = f"<style>{STYLE}</style>" + "\n".join(body)
    if not full_page:
        return fragment
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>layersim report: "
            f"{e(info['model'])}</title></head><body>{fragment}</body></html>\n")
