"""The project's notebooks: habits (stripped, parameters cell), profiles valid, and each notebook
run in the smoke profile through the batch runner with its recorded numbers checked; the executed
notebooks and their HTML pages read cleanly (no progress-bar blocks, no stray outputs, no machine
paths, math typeset offline)."""
import html
import json
import re
from pathlib import Path

import pytest

from headless_chromium import needs_chromium, rendered_dom
from layersim import runner as rg

NOTEBOOKS = rg.default_notebooks_dir()


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_committed_stripped_with_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert nb["cells"][0]["cell_type"] == "markdown" and "Claim" in "".join(nb["cells"][0]["source"])


@pytest.mark.parametrize("profile", rg.PROFILES)
def test_every_profile_matches_the_notebooks(profile):
    """Every profile names every notebook (a notebook missing from the paper profile would silently run at
    its CPU defaults) and sets only parameters the notebook declares (`plan` raises otherwise)."""
    settings = rg.load_profile(profile, NOTEBOOKS)
    assert sorted(settings) == sorted(rg.list_notebooks(NOTEBOOKS))
    runs = rg.plan(profile, NOTEBOOKS)
    assert runs == {name: settings[name] or {} for name in runs}


@pytest.fixture(scope="module")
def smoke_runs(smoke_profile_runs):
    return smoke_profile_runs  # the whole smoke profile, run once per session (conftest.py)


NAMES = rg.list_notebooks(NOTEBOOKS)
# what a figure or side-effect call returns, printed as Out[...] when it ends a cell
STRAY_OUT = re.compile(r"PosixPath\(|WindowsPath\(|<matplotlib|<Axes|^\[?<.* at 0x|^Text\(|^\(-?[\d.e+-]+, -?[\d.e+-]+\)$"
                       r"|^(True|False|None)$")
PROGRESS_LINE = re.compile(r"\d+%\|")  # a tqdm bar


def _executed(smoke_runs, name):
    runs, out = smoke_runs
    assert runs[name].status == "ok", runs[name].error
    return runs[name].executed


@pytest.mark.parametrize("name", NAMES)
def test_executed_notebook_reads_cleanly(smoke_runs, name):
    executed = _executed(smoke_runs, name)
    text = executed.read_text()
    _, out = smoke_runs
    for machine_path in {str(rg.repo_root()), str(out), str(out.resolve()), str(Path.home())}:
        assert machine_path not in text, f"{name} shows the machine path {machine_path}"
    nb = json.loads(text)
    assert "widgets" not in nb["metadata"]  # no widget bars in a batch run
    for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
        for o in cell["outputs"]:
            where = f"{name}, In [{cell['execution_count']}]"
            assert not (o["output_type"] == "stream" and o["name"] == "stderr"), f"{where}: stderr {o['text']}"
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {}), f"{where}: a widget"
            if o["output_type"] == "stream":
                assert not PROGRESS_LINE.search("".join(o["text"])), f"{where}: a progress bar"
            if o["output_type"] == "execute_result" and set(o["data"]) == {"text/plain"}:
                shown = "".join(o["data"]["text/plain"])
                assert not STRAY_OUT.search(shown), f"{where}: stray Out[...] {shown[:200]}"


def test_02_progress_is_one_summary_line(smoke_runs):
    nb = json.loads(_executed(smoke_runs, "02_cos_vs_cka").read_text())
    lines = [line for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
             if o["output_type"] == "stream" for line in "".join(o["text"]).splitlines()]
    extraction = [line for line in lines if line.startswith("extract minilm-l6")]
    assert len(extraction) == 1 and re.fullmatch(r"extract minilm-l6: 2 batches in \d+\.\d s", extraction[0])
    assert sum(line.startswith("extract ") for line in lines) == 2  # and one line for part 2's ViT


def _markdown_math(nb) -> int:
    """How many $...$ / $$...$$ spans the notebook's markdown holds."""
    src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    src = re.sub(r"`[^`]*`", "", src)
    return len(re.findall(r"\$\$.+?\$\$|\$[^$\n]+\$", src, flags=re.S))


def _markdown_text(dom: str) -> str:
    """The visible text of the markdown cells of a rendered page (scripts and MathJax's copies dropped)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)
    dom = re.sub(r'<span class="MJX_Assistive_MathML".*?</math></span>', "", dom, flags=re.S)
    cells = re.findall(r'<div class="[^"]*jp-MarkdownOutput[^"]*"[^>]*>(.*?)</div>\s*</div>', dom, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", "\n".join(cells)))


@needs_chromium
@pytest.mark.parametrize("name", NAMES)
def test_html_page_typesets_its_math_offline(smoke_runs, name):
    page = _executed(smoke_runs, name).with_suffix(".html")
    nb = json.loads(_executed(smoke_runs, name).read_text())
    dom = rendered_dom(page)
    expected = _markdown_math(nb)
    typeset = len(re.findall(r'<span class="MathJax"[ >]', dom)) + len(re.findall(r'<div class="MathJax_Display"', dom))
    assert "class=\"MathJax_Error\"" not in dom and "Math Processing Error" not in dom
    assert typeset == expected, f"{name}: {typeset} formulas typeset, the markdown has {expected}"
    text = _markdown_text(dom)
    assert text.strip(), "no markdown text found on the page"
    raw = re.search(r".{0,40}\$[^$\n]+\$", text)
    assert raw is None, f"raw TeX left on the page: {raw.group(0) if raw else ''}"


def test_02_cos_vs_cka_smoke(smoke_runs):
    runs, out = smoke_runs
    r = runs["02_cos_vs_cka"]
    assert r.status == "ok", r.error
    n = r.metrics["numbers"]
    assert n["num_layers"] == 6 and n["num_samples"] == 96
    cos_last, cka_last = n["cos_to_last"], n["cka_to_last"]
    assert cos_last[-1] == pytest.approx(1.0) and cka_last[-1] == pytest.approx(1.0)
    # MiniLM mean-pooled: COS to the last layer rises steadily (measured 0.30 .. 0.62, 1.0)
    assert all(a < b for a, b in zip(cos_last, cos_last[1:]))
    assert 0.15 < cos_last[0] < 0.5
    assert n["spearman_cos_cka"] >= 0.9
    gap = n["cos_by_gap"]  # claim 2: closer layers are more similar
    assert gap[0] == pytest.approx(1.0) and all(a > b for a, b in zip(gap, gap[1:]))
    minilm_checks = [c for c in r.metrics["checks"] if c["subject"] == "minilm-l6"]
    assert len(minilm_checks) == 3 and all(c["passed"] for c in minilm_checks), minilm_checks
    # part 2: the tiny smoke ViT (3 blocks: only 3 layer pairs, so its Spearman is a coarse +-0.5 / +-1)
    agree = n["agreement[minilm-l6]"]
    assert agree["spearman_cos_cka"] == pytest.approx(n["spearman_cos_cka"]) and agree["layers"] == 6
    vit = n["agreement[train:vit-fashion-mnist]"]
    assert vit["layers"] == 3 and vit["samples"].startswith("300 test images") and vit["min_cos"] > 0
    assert vit["spearman_cos_cka"] in (pytest.approx(v) for v in (-1.0, -0.5, 0.5, 1.0))
    subjects = {(c["name"], c["subject"]) for c in r.metrics["checks"]}
    assert {("cos_cka_rank_agreement", "train:vit-fashion-mnist"), ("all_pairs_positive", "train:vit-fashion-mnist")} <= subjects
    for ext in ("png", "pdf"):
        assert (r.output_dir / f"cos_vs_cka.{ext}").stat().st_size > 1000
        assert (r.output_dir / f"cos_vs_cka_models.{ext}").stat().st_size > 1000
    assert "02_cos_vs_cka" in (out / "smoke" / "REPORT.md").read_text()
