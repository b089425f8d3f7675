"""The page: a Jinja2 environment with autoescaping, its filters, and `render_report`."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from trustdiff.formatting import format_interval, format_number, format_p_value, is_finite
from trustdiff.report import breakdown, views
from trustdiff.result import AuditResult

__all__ = ["render_report"]

_MISSING_CELL = Markup('<span class="na">{}</span>').format(views.MISSING)


def _cell(value: float | None, digits: int = 3, *, signed: bool = False) -> Markup | str:
    """A table number, or a muted dash when there is none."""
    return format_number(value, digits=digits, signed=signed) if is_finite(value) else _MISSING_CELL


def _interval_cell(low: float | None, high: float | None, *, signed: bool = False) -> Markup | str:
    if is_finite(low) and is_finite(high):
        return format_interval(low, high, signed=signed)
    return _MISSING_CELL


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("trustdiff.report", "templates"),
        # Every template escapes every value it prints: nothing in the result document
        # can become markup. Only `Markup` built by the plots passes through as it is.
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        num=lambda value, digits=3: format_number(value, digits=digits),
        signed=lambda value, digits=3: format_number(value, digits=digits, signed=True),
        cell=_cell,
        p_value=format_p_value,
        thousands=views.thousands,
        short_hash=views.short_hash,
        timestamp=views.timestamp,
        method_name=views.method_name,
        binning_name=views.binning_name,
        shade=views.shade_style,
    )
    environment.globals.update(
        interval=_interval_cell,
        missing=_MISSING_CELL,
        views=views,
        breakdown=breakdown,
    )
    return environment


def render_report(result: AuditResult) -> str:
    """The audit as one HTML document (UTF-8 text) that opens offline in any browser.

    Every string taken from the document (dataset text, paths, label names, settings) is
    HTML-escaped by the templates; the page carries no script and a Content-Security-Policy
    that forbids every fetch, so a hostile dataset row can neither run nor phone home.
    """
    template = _environment().get_template("report.html.j2")
    return template.render(result=result, manifest=result.manifest, ci=views.ci_label(result))
