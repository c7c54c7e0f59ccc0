"""The filters' own report sections: every registered filter is asked for one
(:meth:`kl_filter.filters.base.Filter.report_section`; the interface: :mod:`kl_filter.filters.report`), so the
report never names a filter."""

from __future__ import annotations

import logging

from kl_filter.core.errors import KLFilterError

log = logging.getLogger(__name__)


def section_classes() -> list:
    """The :class:`~kl_filter.filters.report.ReportSection` subclasses the registered filters provide, in the
    registry's order, each once. A plugin that cannot be loaded is left out with a warning: its section is then
    missing, the rest of the report stands."""
    from kl_filter.filters.registry import FILTERS

    out = []
    for name in FILTERS.names():
        try:
            cls = FILTERS.get(name)
        except KLFilterError as e:
            log.warning("report: filter %s not loaded, its report section left out: %s", name, e)
            continue
        section = cls.report_section()
        if section is not None and section not in out:
            out.append(section)
    return out
