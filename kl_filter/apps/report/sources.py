"""What the report reads: the pool's own score columns, the score files, and the subsets to compare.

* Score columns of the pool: every ``clip_*_similarity_score`` column of the metadata parquet, read as float32
  by the pool reader (:mod:`kl_filter.pool.schema`; a column of another type is cast or refused).
* Score files (``kl-filter score`` / KL recipes, ``SCORES_DIR/<shard>.parquet``): every numeric column of the
  first shard's file, read as float32. Each shard's file must exist, hold the same rows in the same order (its ``uid`` column
  is compared with the pool's) and carry the same columns; anything else stops the report with the file named.
  A filter's report section (:mod:`.sections`) may claim columns that are ids, not scores (SemDeDup's cluster
  ids): they are read for that section (and checked by it) and left out of the score columns. Each file's
  column provenance (the ``kl_filter`` key-value metadata,
  :mod:`kl_filter.stages.scores`) is read with it: the report shows each column's logit scale and its source.
* Subsets: a recipe (name or YAML path) is run into ``REPORT_DIR/uids/<name>.npy`` with the usual runner
  (its sidecar gives the thresholds drawn on the histograms and the rows each step removed); a ``.npy`` path
  is taken as a finished subset file (thresholds and removals from the runner's ``.json`` sidecar beside it,
  when there is one). Duplicated uids (upsampling) count once in the report's set figures.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import open_file, url_to_fs
from kl_filter.pool import Pool
from kl_filter.core.npyfile import check_regular_file
from kl_filter.pool.schema import SCORE_COLUMN_RE as CLIP_COLUMN_RE, check_columns, read_score, read_uids
from kl_filter.stages.scores import META_KEY         # the score stage's key-value metadata: column provenance
from kl_filter.core.uids import check_uid_array, load_uids, sort_uids

TEXT_COLUMNS = ("text", "original_width", "original_height")


def column_provenance(schema: pa.Schema, path: str) -> dict:
    """``{column: provenance dict}`` from a score file's ``kl_filter`` metadata ({} for a file without it)."""
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        return {}
    try:
        cols = json.loads(raw).get("columns", {})
    except (ValueError, AttributeError) as e:
        raise KLFilterError("malformed kl_filter metadata (not a JSON object)", path) from e
    if not isinstance(cols, dict) or not all(isinstance(v, dict) for v in cols.values()):
        raise KLFilterError("malformed kl_filter metadata: 'columns' must map names to provenance objects", path)
    return cols


def _schema(path: str) -> pa.Schema:
    try:
        _regular(path)  # a FIFO would block: one line, never opened
        with open_file(path, "rb") as f:
            return pq.ParquetFile(f).schema_arrow
    except FileNotFoundError as e:
        raise KLFilterError("no such file", path) from e
    except (pa.ArrowException, OSError) as e:
        raise KLFilterError(f"unreadable parquet ({e})", path) from e


def _regular(path: str, missing: str = "no such file") -> None:
    """Refuse a path that is not a regular file (a FIFO would block the reader) before opening it."""
    try:
        check_regular_file(*url_to_fs(path), "file")
    except KLFilterError as e:
        if str(e).endswith(": no such file"):
            raise KLFilterError(missing, path) from e
        raise


def _numeric_columns(schema: pa.Schema, names) -> list[str]:
    """Score columns of a score file: every numeric one (read as float32 by :mod:`kl_filter.pool.schema`)."""
    out = []
    for n in dict.fromkeys(names):
        t = schema.field(n).type if schema.names.count(n) == 1 else None
        if t is None or pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
            out.append(n)  # a duplicated name is kept here so that reading it says so
    return out


class ScoreSource:
    """Reads, per shard, the score columns (pool's and score files') and the row facts the report shows;
    ``sections``: the filters' report sections (:mod:`.sections`), one instance each over the score files'
    columns."""

    def __init__(self, pool: Pool, scores_dir: str | None, sections=()):
        self.pool, self.scores_dir = pool, scores_dir
        schema = _schema(pool.shards[0].parquet)
        # every CLIP score column, whatever its stored type: the pool reader casts it to float32 or refuses it
        self.pool_columns = list(dict.fromkeys(n for n in schema.names if CLIP_COLUMN_RE.match(n)))
        self.extra = [c for c in TEXT_COLUMNS if c in schema.names]
        numeric: list[str] = []
        self.provenance: dict = {}   # column -> provenance in the first shard's score file
        if scores_dir:
            fs, root = url_to_fs(scores_dir)
            if not fs.isdir(root):
                raise KLFilterError("scores directory does not exist", scores_dir)
            first = self.score_path(pool.shards[0])
            if fs.exists(url_to_fs(first)[1]):
                s = _schema(first)
                numeric = _numeric_columns(s, [n for n in s.names if n != "uid"])
                self.provenance = column_provenance(s, first)
        self.sections = [cls(numeric, self.provenance) for cls in sections]
        self.id_columns = [c for section in self.sections for c in section.id_columns]
        self.file_columns = [c for c in numeric if c not in self.id_columns]
        clash = set(self.pool_columns) & set(self.file_columns)
        if clash:
            raise KLFilterError(f"score files repeat pool columns {sorted(clash)}", scores_dir)
        self.columns = self.pool_columns + self.file_columns

    def score_path(self, shard) -> str:
        return f"{self.scores_dir.rstrip('/')}/{shard.name}.parquet"

    def read(self, shard, facts: bool) -> dict:
        """``{"uids", "num_rows", "scores": {column: float array}, "ids": {id column: int64 array},
        "provenance": {column: provenance}}`` (+ ``text``/sizes when ``facts``)."""
        data = self.pool.read(shard, columns=self.pool_columns + (self.extra if facts else []))
        out = {"uids": data.uids, "num_rows": data.num_rows,
               "scores": {c: data.column(c) for c in self.pool_columns}, "ids": {}, "provenance": {}}
        if facts:
            for c in self.extra:
                out[c] = data.columns[c]
        if self.file_columns:
            path = self.score_path(shard)
            try:
                _regular(path, "score file missing for this shard")
                with open_file(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    names = ["uid"] + self.file_columns + self.id_columns
                    check_columns(pf.schema_arrow, names, path)
                    out["provenance"] = column_provenance(pf.schema_arrow, path)
                    table = pf.read(columns=names)
            except FileNotFoundError as e:
                raise KLFilterError("score file missing for this shard", path) from e
            except KeyError as e:
                raise KLFilterError(f"missing column {e}", path) from e
            except (pa.ArrowException, OSError) as e:
                raise KLFilterError(f"unreadable score file ({e})", path) from e
            # compared as 128-bit uids: the same rows whatever case or string type the file stores them in
            uids = read_uids(table.column("uid"), path)[0]
            if table.num_rows != data.num_rows or not np.array_equal(uids, data.uids):
                raise KLFilterError(f"rows differ from the pool shard {shard.parquet}", path)
            for c in self.file_columns:
                out["scores"][c] = read_score(table.column(c), path, c)
            for section in self.sections:
                out["ids"].update(section.read_ids(table, path))
        return out


@dataclass
class Subset:
    name: str
    path: str
    uids: np.ndarray                      # sorted, unique u8,u8
    file_rows: int                        # entries in the file, duplicates included
    summary: dict = field(default_factory=dict)  # the runner's sidecar (rules, thresholds, rows removed per step)

    def thresholds(self) -> list[dict]:
        """``{"column", "value", "keep"}`` for every score rule of the recipe (``keep`` is ``>=`` or ``<=``)."""
        out = []
        for r in self.summary.get("rules", []):
            value = r.get("computed_threshold", r.get("threshold"))
            if r.get("rule") == "top" and value is not None:
                out.append({"column": r["column"], "value": float(value), "keep": "<=" if r.get("reverse") else ">="})
        return out

    def removal(self) -> dict | None:
        """The rows each step of the run removed, from the sidecar's ``removed`` list (None: not recorded, as
        for a bare ``.npy`` or a sidecar written before the field existed)::

            {"pool_rows": n, "kept": k,
             "steps": [{"step", "kind": "rule" | "refine", "removed", "share": removed / n, "remaining"}, ...]}

        Steps are in the order they were applied; each counts the rows that passed every earlier step and fail
        this one, so ``remaining`` of the last step is ``kept``. A list that does not add up is an error."""
        steps = self.summary.get("removed")
        if steps is None:
            return None
        where = _sidecar_name(self.path)
        n, kept = self.summary.get("pool_rows"), self.summary.get("kept")
        if not (isinstance(steps, list) and _count(n) and _count(kept)
                and all(isinstance(st, dict) and isinstance(st.get("step"), str)
                        and st.get("kind") in ("rule", "refine") and _count(st.get("removed")) for st in steps)):
            raise KLFilterError("malformed sidecar: 'removed' must be a list of {step, kind: rule|refine, removed} "
                                "beside integer pool_rows and kept", where)
        if n != kept + sum(st["removed"] for st in steps):
            raise KLFilterError(f"sidecar does not add up: pool_rows {n:,} != kept {kept:,} + removed "
                                f"{sum(st['removed'] for st in steps):,}", where)
        out, remaining = [], n
        for st in steps:
            remaining -= st["removed"]
            out.append({"step": st["step"], "kind": st["kind"], "removed": st["removed"],
                        "share": st["removed"] / n if n else 0.0, "remaining": remaining})
        return {"pool_rows": n, "kept": kept, "steps": out}


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _sidecar_name(path: str) -> str:
    from kl_filter.core.uids import sidecar_path

    return sidecar_path(path)


def _unique_sorted(arr: np.ndarray) -> np.ndarray:
    arr = sort_uids(arr)
    if len(arr) > 1:
        new = np.concatenate([[True], (arr["f0"][1:] != arr["f0"][:-1]) | (arr["f1"][1:] != arr["f1"][:-1])])
        arr = arr[new]
    return arr


def load_subset(name: str, path: str, summary: dict | None = None) -> Subset:
    """A subset file; its thresholds come from ``summary`` or else from the runner's sidecar beside it."""
    arr = load_uids(path)
    check_uid_array(arr, path)
    if summary is None:
        summary = _sidecar(path)
    subset = Subset(name, path, _unique_sorted(arr), int(len(arr)), summary)
    subset.removal()  # a sidecar whose counts do not add up stops the report here, before any pass over the pool
    return subset


def _sidecar(path: str) -> dict:
    """The runner's sidecar of a subset file ({} when there is none); one that belongs to another UID file (its
    sha256 differs: a pair mixed by an interrupted run) stops the report."""
    from kl_filter.core.uids import check_sidecar

    doc, _ = check_sidecar(path)
    return doc or {}


def subset_name(spec: str) -> str:
    base = os.path.basename(spec)
    for ext in (".npy", ".yaml", ".yml"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def prepare_subsets(specs: list[str], metadata_dir: str, out_dir: str, ctx) -> list[Subset]:
    """Run each recipe (or load each ``.npy``); names must be distinct (they label the figures)."""
    from kl_filter.filters import build_filter
    from kl_filter.recipes import load_recipe
    from kl_filter.runner import run_filter

    out, names = [], set()
    for spec in specs:
        name = subset_name(spec)
        if name in names:
            raise KLFilterError(f"--filters names {name!r} twice")
        names.add(name)
        if spec.endswith(".npy"):
            out.append(load_subset(name, spec))
            continue
        recipe = load_recipe(spec)
        save = os.path.join(out_dir, "uids", f"{name}.npy")
        summary = run_filter(build_filter(recipe.filter, dict(recipe.params)), metadata_dir, save, ctx,
                             recipe=recipe.name)
        out.append(load_subset(name, save, summary))
    return out
