"""Kinds of output directory (:mod:`.outputs` checks them): each is registered by the code that owns its layout
(:func:`register_layout`), with a function that recognises one written before markers existed (or by a run killed
before it wrote its marker) by its content; a kind registered without one (a report, the track's work directory:
replaced or deleted as a whole) is proven by its marker (:data:`MARKER`) alone.

The library registers its own kinds here: ``scores`` (score files, statistics, the bucket stage's work directory),
``parts`` (a statistics file's partials directory, ``STATS.npz.parts``, removed when the file is complete, which
must hold only partials: ``<shard>.npz`` with their provenance) and ``pool`` (a synthetic pool). Each application
registers its own when imported (``kl_filter.apps``: report, reshard, demo, track).
"""

from __future__ import annotations

from typing import Callable

from kl_filter.core.errors import KLFilterError

MARKER = ".kl-filter"
_JSON_MAX_BYTES = 64 << 20    # a kl-filter manifest read to recognise a directory (meta.json, synth_manifest.json)

Recognise = Callable[[object, str, list], "str | None"]
"""``(fs, directory path on fs, its entry names) -> None`` when every entry is something kl-filter writes in a
directory of that kind, else the first entry that is not."""
_LAYOUTS: dict[str, Recognise | None] = {}


def register_layout(kind: str, recognise: Recognise | None = None) -> None:
    """Declare the output directory ``kind`` (the name its marker holds) and how to recognise one without a
    marker (None: only its marker proves it). Registering a kind again replaces its recogniser."""
    _LAYOUTS[kind] = recognise


def layout(kind: str) -> Recognise | None:
    """The recogniser of ``kind`` (None: only a marker proves it); ValueError for a kind nobody registered."""
    if kind not in _LAYOUTS:
        raise ValueError(f"unknown output directory kind {kind!r} (register_layout it where its layout is written)")
    return _LAYOUTS[kind]


def first_foreign(names: list[str], ok: Callable[[str], bool]) -> str | None:
    """The first entry ``ok`` refuses (markers and the temporary files of killed runs are always kl-filter's)."""
    from kl_filter.core.atomic import _TMP_TAIL

    return next((n for n in names if n != MARKER and not _TMP_TAIL.match(n) and not ok(n)), None)


def is_score_file(fs, path: str) -> bool:
    """A parquet file with the score stage's ``kl_filter`` metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kl_filter.core.npyfile import check_regular_file

    try:
        check_regular_file(fs, path, "score file")  # a FIFO would block the open below forever
        with fs.open(path, "rb") as f:
            return b"kl_filter" in (pq.ParquetFile(f).schema_arrow.metadata or {})
    except KLFilterError:
        return False
    except (pa.ArrowException, OSError, ValueError):
        return False


def _empty_file(fs, path: str) -> bool:
    from kl_filter.core.npyfile import check_regular_file

    try:
        return check_regular_file(fs, path) == 0
    except KLFilterError:
        return False


def _npz_has(fs, path: str, key: str) -> bool:
    import zipfile

    from kl_filter.core.npyfile import check_regular_file

    try:
        check_regular_file(fs, path)  # a FIFO would block the open below forever
        with fs.open(path, "rb") as f, zipfile.ZipFile(f) as z:
            return f"{key}.npy" in z.namelist()
    except (OSError, ValueError, zipfile.BadZipFile, KLFilterError):
        return False


def json_has(fs, path: str, key: str) -> bool:
    """Is ``path`` a JSON object (a kl-filter manifest, read with a size bound) with ``key``?"""
    from kl_filter.core.inputs import load_json

    try:
        doc = load_json(path, "manifest", _JSON_MAX_BYTES, fs=fs)
        return isinstance(doc, dict) and key in doc
    except (OSError, KLFilterError):
        return False


# ---- the library's own kinds (each application registers its own where it writes them) ----
def _recognise_scores(fs, p: str, names: list[str]) -> str | None:
    """Score files (parquet with the score stage's metadata), statistics and the bucket stage's work directory."""
    return first_foreign(names, lambda n: n in ("stats.npz", "stats.npz.parts", ".buckets")
                         or (n.endswith(".parquet") and is_score_file(fs, f"{p.rstrip('/')}/{n}")))


def _recognise_parts(fs, p: str, names: list[str]) -> str | None:
    """A statistics file's partials: ``<shard>.npz`` with their provenance, or zero bytes (what a write cut short
    by a crash or a full disk can leave: nothing to lose, recomputed)."""
    def ok(n):
        path = f"{p.rstrip('/')}/{n}"
        return n.endswith(".npz") and (_empty_file(fs, path) or _npz_has(fs, path, "provenance"))

    return first_foreign(names, ok)


def _recognise_pool(fs, p: str, names: list[str]) -> str | None:
    """A synthetic pool: its manifest says so."""
    if json_has(fs, f"{p.rstrip('/')}/synth_manifest.json", "generator"):
        return None
    return next(n for n in names if n != MARKER)


register_layout("scores", _recognise_scores)
register_layout("parts", _recognise_parts)
register_layout("pool", _recognise_pool)
