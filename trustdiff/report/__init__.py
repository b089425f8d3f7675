"""Render an audit result as one self-contained HTML page: inline CSS and SVG, no script.

`page` holds the Jinja2 environment and `render_report`; `views` computes what each section
shows; `plots` draws the SVG figures on the canvas of `svg`; the layout is in `templates/`.
"""

from trustdiff.report.page import render_report

__all__ = ["render_report"]
