"""The gallery: each executed notebook as an HTML page (nbconvert; its math typeset by a MathJax copy in
``mathjax/``, no network), and ``index.html`` with every figure and a link to each notebook's page."""
from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Sequence

from ..storage import atomic_folder, atomic_write_text
from .report import _check_name, _checks, _fmt, _status_text, _when
from .results import REPORT_FILE, NotebookRun, _now

MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"


_PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- the lab page without what it would fetch from the network: require.js and mermaid (unused here) -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{#- MathJax 2 from the folder beside the page, with the STIX web fonts that copy ships -#}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  displayAlign: "center", messageStyle: "none", menuSettings: {zoom: "None"}
});
</script>
<script src="{{ resources.mathjax_url }}"></script>
{%- endblock html_head_js_mathjax -%}
"""


def notebook_to_html(notebook: Path, out: Path, *, mathjax_url: str) -> Path:
    """Render an executed notebook to a standalone HTML page (nbconvert's lab look) at `out`.

    `mathjax_url` is where the page loads MathJax 2 from, relative to the page (see `install_mathjax`);
    the page fetches nothing from the network.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="layersim_page.html.j2",
                            extra_loaders=[jinja2.DictLoader({"layersim_page.html.j2": _PAGE_TEMPLATE})],
                            mathjax_url=f"{mathjax_url}?config={MATHJAX_CONFIG}")
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    return atomic_write_text(out, body)


def mathjax_source() -> Path:
    """MathJax 2 as shipped by the PyPI package jupyter-server-mathjax (Jupyter's offline copy)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise ImportError("the HTML pages typeset their math with the MathJax copy of the package "
                          "jupyter-server-mathjax; install it: pip install jupyter-server-mathjax") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


# what MathJax 2 with TeX-AMS-MML_HTMLorMML-full needs from the package: not the SVG output nor the
# translations (the pages are in English), about 8 MB instead of 12
_MATHJAX_SKIP = ("localization", "SVG", "*.md")


def install_mathjax(folder: Path) -> Path:
    """Copy MathJax into `folder` (``results/<profile>/mathjax``) unless the same copy is there."""
    folder = Path(folder)
    from importlib.metadata import version

    source = mathjax_source()
    stamp = f"jupyter-server-mathjax {version('jupyter-server-mathjax')}\n"
    if (folder / ".source").exists() and (folder / ".source").read_text() == stamp:
        return folder
    with atomic_folder(folder, replace=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_MATHJAX_SKIP))
        (tmp / ".source").write_text(stamp)
        for p in [tmp, *tmp.rglob("*")]:  # a folder others can read, like any results
            p.chmod(0o755 if p.is_dir() else 0o644)
    return folder


_INDEX_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: .3em .6em; }
th { background: #f3f3f3; } .fail, .failed, .interrupted { color: #b00; font-weight: bold; } .pass, .ok { color: #070; }
figure { display: inline-block; margin: .5em; vertical-align: top; } figure img { max-width: 100%; border: 1px solid #ddd; }
section { border-top: 1px solid #ddd; margin-top: 2em; } .muted { color: #666; }
"""


def write_index(runs: Sequence[NotebookRun], profile: str, path: Path) -> str:
    """Write the gallery page ``index.html`` (beside REPORT.md): every notebook with its status,
    its figures and links to its HTML page and executed notebook, and the claims table."""
    base = Path(path).parent
    e = html.escape
    rel = lambda p: e(Path(os.path.relpath(p, base)).as_posix())  # noqa: E731
    checks = _checks(runs)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>layersim results: profile {e(profile)}</title><style>{_INDEX_STYLE}</style></head><body>",
             f"<h1>layersim results: profile <code>{e(profile)}</code></h1>",
             f"<p class='muted'>Generated {e(_now())}. Numbers and claim checks in detail: "
             f"<a href='{REPORT_FILE}'>{REPORT_FILE}</a>.</p>",
             "<h2>Paper claims as numeric checks</h2>"]
    if checks:
        parts.append("<table><tr><th>check</th><th>claim</th><th>value</th><th>op</th><th>threshold</th>"
                     "<th>result</th><th>notebook</th></tr>")
        for r, c in checks:
            result = "pass" if c.get("passed") else "fail"
            parts.append(f"<tr><td>{e(_check_name(c))}</td><td>{e(str(c.get('claim')))}</td>"
                         f"<td>{e(_fmt(c.get('value')))}</td><td>{e(str(c.get('op')))}</td>"
                         f"<td>{e(_fmt(c.get('threshold')))}</td><td class='{result}'>{result}</td>"
                         f"<td>{e(r.name)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No checks were recorded.</p>")
    parts.append("<h2>Notebooks</h2>")
    for r in runs:
        status = _status_text(r, markdown=False)
        links = []
        if r.html:
            links.append(f"<a href='{rel(r.page)}'>the executed notebook as a page</a>")
        if r.executed.exists():
            links.append(f"<a href='{rel(r.executed)}'>.ipynb</a>")
        parts.append(f"<section><h3 id='{e(r.name)}'>{e(r.name)}</h3><p><span class='{e(r.status)}'>"
                     f"{e(status)}</span>" + (f", {r.seconds:.1f} s" if r.status != "not run" else "")
                     + (f", results from {e(_when(r.finished))}" if r.finished else "")
                     + (" &middot; " + " &middot; ".join(links) if links else "") + "</p>")
        if r.error and r.status != "ok":
            parts.append(f"<p class='failed'>{e(r.error)}</p>")
        for fig in r.metrics.get("figures", []):
            png, pdf = r.output_dir / f"{fig}.png", r.output_dir / f"{fig}.pdf"
            parts.append(f"<figure><a href='{rel(png)}'><img src='{rel(png)}' alt='{e(fig)}'></a>"
                         f"<figcaption>{e(fig)} (<a href='{rel(pdf)}'>PDF</a>)</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    text = "\n".join(parts) + "\n"
    atomic_write_text(path, text)
    return text
