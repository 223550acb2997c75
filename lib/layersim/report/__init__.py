"""`python -m layersim.report`: the paper's analysis of any model in one page.

>>> from layersim.report import report
>>> r = report("minilm-l6", n=200, out="report-minilm")     # writes report.json and report.html
>>> r                                                       # in Jupyter: the same page inline
>>> r.numbers["cos"], r.numbers["cka"]                      # (L, L) nested lists

From a shell: ``python -m layersim.report MODEL [--data SOURCE] [--n N] [--out DIR] [--device D]``.

Modules: `inputs` (the model and the data, checked against each other; `ReportError`), `analysis` (every
number, streamed over the data), `page` (figures and the HTML page), `api` (`report`, `Report`), `cli`.
"""
from .api import Report, report
from .inputs import SOURCES, ReportError

__all__ = ["report", "Report", "ReportError", "SOURCES"]
