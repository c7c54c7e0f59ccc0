"""The inspection report (``kl-filter inspect``): what each score looks like and what each filter keeps.

Flow, one module per step::

    sources   pool score columns + score files, subsets (recipes run, or .npy files)
    sections  the filters' own sections (Filter.report_section: SemDeDup's cluster sizes, kept share against ε
              and duplicate pairs), asked of every registered filter: the report never names one
    figures   two streaming passes → every number (accumulate: the streaming pieces; ngrams: decile coverage)
    thumbs    example images from the pool's webdataset tars
    plots     PNGs drawn from the figures alone
    page      index.html over the figures
    build     all of it into one report directory, atomically
"""

from kl_filter.apps.report.build import DEFAULT_FILTERS, build_report

__all__ = ["DEFAULT_FILTERS", "build_report"]
