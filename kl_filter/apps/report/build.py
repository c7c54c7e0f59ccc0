"""``build_report``: subsets → figures → thumbnails → plots → page, written as one directory, atomically.

Layout of ``REPORT_DIR``::

    index.html       the page (open it in any browser; nothing is fetched)
    figures.json     every number the page and the plots show (:mod:`.figures`), plus how it was made;
                     ``subsets[s].removed``: the rows each step of the subset's run removed (from its sidecar,
                     :meth:`.sources.Subset.removal`), or null when the sidecar did not record them
    sample.parquet   the uniform sample behind the sampled figures (uid, text, scores, English, subset flags)
    plots/*.png      histograms, heatmaps, n-gram coverage, kept-row distributions
    thumbs/*.jpg     example images (only with ``shards_dir``): score-column extremes, subsets' kept and dropped
                     rows, and the rows the filters' own sections show (both rows of each SemDeDup duplicate
                     pair)
    uids/*.npy       the subset files of the recipes the report ran (with their .json sidecars)

Everything is written into a temporary sibling directory which then replaces ``REPORT_DIR`` in one rename;
an existing ``REPORT_DIR`` is replaced only if it is empty or a previous report, proven by the marker file every
report holds (``.kl-filter``, :mod:`kl_filter.core.outputs`; a ``figures.json`` alone proves nothing), and never when
an input (the pool, the shards, a subset file, the scores directory) is inside it, so a wrong ``--out`` never
deletes someone's data. Temporary directories of killed runs are removed by the next run. The report directory
is local (the pool may be any fsspec URL).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys

import pyarrow.parquet as pq

from kl_filter.core.version import __version__
from kl_filter.core.atomic import clean_stale_tmp, tmp_name
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import is_local, url_to_fs
from kl_filter.core.layouts import register_layout
from kl_filter.core.outputs import MARKER, In, Out, check, marker_bytes
from kl_filter.pool import Pool
from kl_filter.core.progress import NoProgress
from kl_filter.apps.report.figures import compute_figures
from kl_filter.apps.report.page import now, render
from kl_filter.apps.report.plots import all_plots
from kl_filter.apps.report.sections import section_classes
from kl_filter.apps.report.sources import ScoreSource, prepare_subsets

log = logging.getLogger(__name__)
register_layout("report")  # replaced as a whole: only its marker proves a directory is a report
MAX_BINS = 10_000  # histogram bars per score column: more than a figure can show
# Shown when --filters is not given: the CLIP-score and LAION-2B baselines beside the paper's text-target scores.
DEFAULT_FILTERS = ["clip_score_l14_30", "laion2b", "basic_filter", "kl_l14_txt_25", "kl_reverse_l14_txt_25",
                   "kl_l14_txt_25_x_clip_l14_30"]


def _write(path: str, data: bytes, out: str) -> None:
    with _writing(out):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _os_reason(e: BaseException) -> str:
    """The OS's words for the failure behind ``e`` (its first OSError cause), else ``e``'s own first line."""
    seen, visited = e, set()
    while seen is not None and id(seen) not in visited:  # a chain of causes may loop back
        visited.add(id(seen))
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    # a worker's error crossed a process boundary without its cause: its message says it
    m = re.search(r"write failed \(([^()]+)\)", str(e))
    return m.group(1) if m else str(e).splitlines()[0][:200]


@contextlib.contextmanager
def _writing(out: str):
    """A failed write into the report's temp directory (a full disk, a quota) as one line naming the report
    ``out``; the caller removes the temp directory, so nothing of the report is left."""
    try:
        yield
    except OSError as e:
        raise KLFilterError(f"write failed ({e.strerror or str(e).splitlines()[0][:200]}); nothing was written",
                            out) from e


def check_paths(metadata_dir: str, out: str, scores_dir: str | None = None, shards_dir: str | None = None,
                filters=None, extra_outputs=()) -> None:
    """The report's outputs against its inputs (:func:`kl_filter.core.outputs.check`), before any work."""
    outs = [Out(out, "--out", "dir", marker="report", replace=True), *extra_outputs]
    if scores_dir:
        outs.append(Out(scores_dir, "--scores_dir", "dir", marker="scores"))
    ins = [In(metadata_dir, "--metadata_dir"), In(shards_dir, "--shards_dir")]
    ins += [In(f, "--filters") for f in filters or [] if os.path.exists(f)]
    check(outs, ins)


def _swap_in(tmp: str, out: str) -> None:
    old = None
    if os.path.exists(out):
        old = tmp_name(out)  # a name the next run removes if this one is killed before the rmtree
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def build_report(metadata_dir: str, out: str, scores_dir: str | None = None, shards_dir: str | None = None,
                 filters: list[str] | None = None, ctx=None, sample_size: int = 100_000, examples: int = 8,
                 bins: int = 50, ngram_top_k: int = 50, thumb_size: int = 128, progress=NoProgress,
                 dedup_pairs: int = 6) -> dict:
    """Build the report; return the figures. ``filters=None`` means :data:`DEFAULT_FILTERS` (each skipped
    with a warning when it cannot run on this pool); filters given explicitly must all run."""
    from kl_filter.runner import RunContext

    if not is_local(out):
        raise KLFilterError("the report directory must be a local path", out)
    out = os.path.abspath(url_to_fs(out)[1].rstrip("/"))
    check_paths(metadata_dir, out, scores_dir, shards_dir, filters)
    for name, v in (("--sample_size", sample_size), ("--examples", examples), ("--bins", bins),
                    ("--ngram_top_k", ngram_top_k), ("--thumb_size", thumb_size), ("--dedup_pairs", dedup_pairs)):
        least = 0 if name in ("--sample_size", "--examples", "--dedup_pairs") else 1
        if v < least:
            raise KLFilterError(f"{name} must be >= {least}, got {v}")
    if bins > MAX_BINS:  # every column's histogram holds bins + 1 float64 edges (10^12: a 7.3 TiB allocation)
        raise KLFilterError(f"--bins must be at most {MAX_BINS:,} (a histogram bar per few pixels), got {bins:,}")
    pool = Pool(metadata_dir)
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        clean_stale_tmp(parent, os.path.basename(out))  # what killed runs left
        tmp = tmp_name(out)
        os.makedirs(tmp)
    except OSError as e:
        raise KLFilterError(f"cannot create the report directory ({e.strerror or e})", out) from e
    try:
        _write(os.path.join(tmp, MARKER), marker_bytes("report"), out)
    except KLFilterError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        ctx = ctx or RunContext(progress=progress)
        if ctx.scores_dir is None:
            ctx.scores_dir = scores_dir or os.path.join(tmp, "scores")
        subsets, skipped = _subsets(filters, metadata_dir, tmp, ctx)
        used_scores = ctx.scores_dir if os.path.isdir(ctx.scores_dir) else None
        sections = section_classes()
        source = ScoreSource(pool, used_scores, sections)
        for s in subsets:  # paths inside the report are given relative to it (the temp name goes away)
            if s.path.startswith(tmp + os.sep):
                s.path = os.path.relpath(s.path, tmp)
        figures, sample = compute_figures(source, subsets, seed=ctx.seed, sample_size=sample_size,
                                          examples=examples, bins=bins, ngram_top_k=ngram_top_k,
                                          loaders=max(1, ctx.num_workers), progress=progress,
                                          dedup_pairs=dedup_pairs)
        for s in subsets:  # why rows left, step by step, as the run counted them (None: not recorded)
            figures["subsets"][s.name]["removed"] = s.removal()
        thumbs = {}
        if shards_dir:
            from kl_filter.apps.report.thumbs import make_thumbnails

            wanted = {e["uid"] for e in _examples(figures, sections)}
            for uid, data in make_thumbnails(shards_dir, wanted, thumb_size, ctx.num_workers, progress).items():
                thumbs[uid] = f"thumbs/{uid}.jpg"
                _write(os.path.join(tmp, thumbs[uid]), data, out)
        for e in _examples(figures, sections):
            e["thumbnail"] = thumbs.get(e["uid"])
        plots = all_plots(figures, sections)
        for rel, data in plots.items():
            _write(os.path.join(tmp, rel), data, out)
        if used_scores and used_scores.startswith(tmp + os.sep):
            used_scores = os.path.relpath(used_scores, tmp)
        meta = {"version": __version__, "created": now(), "argv": sys.argv, "scores_dir": used_scores,
                "shards_dir": shards_dir, "filters": filters, "sample_size": sample_size, "examples": examples,
                "bins": bins, "ngram_top_k": ngram_top_k, "thumb_size": thumb_size, "dedup_pairs": dedup_pairs,
                "skipped_filters": skipped}
        figures["report"] = dict(meta, plots=sorted(plots), thumbnails=len(thumbs))
        with _writing(out):  # pyarrow's write errors are OSErrors too
            pq.write_table(sample, os.path.join(tmp, "sample.parquet"))
        _write(os.path.join(tmp, "figures.json"), json.dumps(figures, indent=1, allow_nan=False).encode(), out)
        page = render(figures, set(plots), thumbs, meta, sections)
        _write(os.path.join(tmp, "index.html"), page.encode("utf-8"), out)
        with _writing(out):
            _swap_in(tmp, out)
    except KLFilterError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp in str(e):  # about a file of the temp directory, now removed: name the report instead
            raise KLFilterError(f"write failed ({_os_reason(e)}); nothing was written", out) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return figures


def _examples(figures: dict, sections) -> list[dict]:
    """Every example row the page shows: top and bottom of each score column, kept and dropped of each subset,
    the rows of the filters' own sections."""
    return ([e for c in figures["columns"].values() for e in c["top"] + c["bottom"]]
            + [e for s in figures["subsets"].values() for e in s["kept_examples"] + s["dropped_examples"]]
            + [e for s in sections for e in s.examples(figures.get(s.key) or {})])


def _subsets(filters, metadata_dir, tmp, ctx):
    if filters is not None:
        return prepare_subsets(filters, metadata_dir, tmp, ctx), []
    got, skipped = [], []
    for f in DEFAULT_FILTERS:
        try:
            got += prepare_subsets([f], metadata_dir, tmp, ctx)
        except KLFilterError as e:
            log.warning("report: default recipe %s skipped: %s", f, e)
            skipped.append({"recipe": f, "reason": str(e)})
    return got, skipped
