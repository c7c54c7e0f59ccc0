"""The contracts: what the framework relies on from every filter and scorer, as pytest classes to subclass.

A contract builds the plugin from ``params`` (plus the files :meth:`make_assets` writes), writes a small seeded
pool (:func:`kl_filter.testing.pools.make_pool`, with any npz key the plugin declares), runs it through the
runner (:func:`kl_filter.runner.run_filter`, on the CPU) with 1 and 2 workers and once more on the same scores
directory, and checks each promise in a test of its own. The heavy work (pool, statistics, runs: a few seconds)
is done once per class; each test then takes about a second or less on the default 900-row pool.

Both contracts check:

* ``test_params_are_its_signature``: ``params()`` holds exactly the ``__init__`` signature's parameters, is JSON
  (the sidecar and provenance record it) and rebuilds an equal plugin through the signature's validation;
* ``test_registered_name_resolves``: a registered name gives this class and these parameters back (skipped for
  a plugin not registered in this environment: install its distribution to run it);
* ``test_deterministic``: the same UID file bytes (and score columns, bit for bit) with 1 and 2 workers, and a
  rerun on the same scores directory reuses every column it stored and writes the same bytes;
* ``test_reads_only_declared``: a copy of the pool holding only the declared parquet columns and npz keys (and
  those the statistics stage reads for a declared need) gives the same UID file.

:class:`FilterContract` adds: the rules are rules and stable, ``score()`` passes the runner's boundary check on
every shard, ``refine()`` only narrows the keep mask (and equals checking every row, then the AND: what lets the
runner refine only the candidates), and the UID file is valid, its sidecar's counts add up, and it equals a plain
transcription of DataComp's rule on the scored columns wherever every rule is a ``Top`` (ties kept) or a ``Keep``
(:func:`reference_keep`). :class:`ScorerContract` adds: ``outputs()`` unique and stable, ``compute()`` on each
shard returns exactly those columns as 1-d float32 (or bool) arrays of the shard's length, twice the same bits,
with nothing but the statistics its ``stats()`` declares; the stored columns are ``compute()``'s (or, for a
:class:`~kl_filter.scorers.base.BucketScorer`, a plain pass over its partition's buckets); a bucket partition
gives every row one bucket, the same for 1 and 2 workers; provenance is JSON and stable, and changes wherever
``changed_params`` change a column's values; the top ``fraction`` cut on its column (``kl-filter select --name
SCORER --fraction F`` when that name is a cut on it, else the same cut through the Python API) keeps what
DataComp's rule keeps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from kl_filter.core.progress import NoProgress
from kl_filter.core.uids import check_uid_array, concat_uids, load_uids, sidecar_path, sort_uids
from kl_filter.engines import LocalEngine
from kl_filter.filters.base import Filter
from kl_filter.filters.registry import FILTERS, build_filter, get_filter_class, list_filters
from kl_filter.pool import Pool
from kl_filter.rules.base import Rule, check_rules
from kl_filter.rules.top import Keep, Top
from kl_filter.runner import RunContext, check_score_output, run_filter
from kl_filter.scorers.base import ARCHS, BucketScorer, Scorer, StatsNeed
from kl_filter.scorers.registry import SCORERS, build_scorer
from kl_filter.stages.scores import read_columns, run_scores, score_path
from kl_filter.testing.pools import make_pool, strip_pool

SYNTH_KEYS = ("b32_img", "b32_txt", "l14_img", "l14_txt", "dedup")  # what make_pool writes without being asked
_POOLS: dict = {}  # (base temp dir, pool spec) -> path: classes asking for the same pool share one


# ---- plain references and helpers (public: a plugin's own tests may use them) -----------------------------------
def pool_uids(pool: Pool) -> np.ndarray:
    """Every uid of the pool, in pool order (u8,u8)."""
    return concat_uids([pool.read(s).uids for s in pool.shards])


def stored_columns(pool: Pool, scores_dir, names) -> dict:
    """``{column: float32[pool rows]}`` of score columns a run stored in ``scores_dir``, in pool order."""
    names = list(names)
    if not names:
        return {}
    parts = [read_columns(score_path(str(scores_dir), s), names) for s in pool.shards]
    return {c: np.concatenate([p[c] for p in parts]) for c in names}


def derived_columns(flt: Filter) -> tuple:
    """The columns a filter's scorers compute (what the score stage stores)."""
    return tuple(dict.fromkeys(c for s in flt.scorers() for c in s.outputs()))


def declared_reads(flt: Filter) -> tuple[list, list]:
    """(parquet columns, npz keys) a run of ``flt`` may read: the filter's and its scorers' declarations, plus
    ``text`` and the family's image and text keys for a scorer that needs reference statistics (the statistics
    stage reads them: caption-filtered samples)."""
    columns, keys = [*flt.columns, *flt.refine_columns], [*flt.keys]
    for s in flt.scorers():
        columns += s.columns
        keys += s.keys
        need = s.stats()
        if need is not None:
            columns.append("text")
            keys += [f"{need.arch}_img", f"{need.arch}_txt"]
    return list(dict.fromkeys(columns)), list(dict.fromkeys(keys))


def read_shard(flt: Filter, pool: Pool, shard, scores_dir):
    """One shard as the runner hands it to ``flt.score``: the declared columns and keys, and the stored scores."""
    data = pool.read(shard, flt.columns, flt.keys)
    names = derived_columns(flt)
    data.scores = read_columns(score_path(str(scores_dir), shard), names) if names else {}
    return data


def _plain(rule) -> bool:
    return type(rule) is Keep or (type(rule) is Top and rule.ties == "keep")


def reference_keep(flt: Filter, pool: Pool, scores_dir) -> np.ndarray | None:
    """The sorted uids ``flt`` keeps on ``pool``, by a plain transcription of its rules over the whole pool
    (None when a rule has no transcription here: only ``Keep`` and ``Top`` with ties kept have one).

    ``Top``: DataComp's ``threshold = -np.sort(-scores)[int(n * fraction)]``, keep ``>=`` (the last row for
    fraction 1); ``reverse``: the position from ``1 - fraction``, keep ``<=``; a threshold: ``>=`` it (``<=``);
    ``then``: the position ``int(N * fraction)`` among the rows the rules before it keep (N: the pool's rows for
    ``pool``, the survivors' for ``survivors``). Columns are ``score()``'s, numbers as float32 (as the runner
    compares them). ``refine`` runs on every row and is ANDed last."""
    rules = flt.rules()
    if not all(_plain(r) for r in rules):
        return None
    uids, cols = [], {}
    for shard in pool.shards:
        data = read_shard(flt, pool, shard, scores_dir)
        uids.append(data.uids)
        for c, v in flt.score(data).items():
            v = np.asarray(v)
            cols.setdefault(c, []).append(v.astype(np.float32) if v.dtype.kind in "iuf" else v)
    uids = concat_uids(uids)
    n = len(uids)
    cols = {c: np.concatenate(v) for c, v in cols.items()}
    keep = np.ones(n, dtype=bool)
    for r in rules:
        col = cols[r.column]
        if type(r) is Keep:
            keep &= col.astype(bool)
            continue
        if r.fraction is None:
            t = r.threshold
        elif r.then is None:
            t = -np.sort(-col)[min(int(n * ((1 - r.fraction) if r.reverse else r.fraction)), n - 1)]
        else:
            among = col[keep]
            if len(among) == 0:
                continue
            total = n if r.then == "pool" else len(among)
            t = -np.sort(-among)[min(int(total * r.fraction), len(among) - 1)]
        keep &= (col <= t) if r.reverse else (col >= t)
    if flt.refine is not None:
        keep &= np.concatenate([np.asarray(flt.refine(pool.read(s, flt.refine_columns), np.ones(n_s, bool)), bool)
                                for s, n_s in zip(pool.shards, pool.row_counts)])
    return sort_uids(uids[keep])


def run_once(flt: Filter, pool_dir, save_path, scores_dir, workers: int, seed: int) -> dict:
    """``run_filter`` on the CPU with ``workers`` workers (the summary the sidecar holds)."""
    ctx = RunContext(num_workers=workers, seed=seed, scores_dir=str(scores_dir), device="cpu")
    return run_filter(flt, str(pool_dir), str(save_path), ctx)


def reference_stats(scorer: Scorer, pool_dir, seed: int):
    """The reference statistics of exactly ``scorer.stats()`` (None when it declares none), as a run with
    ``--seed seed`` draws them."""
    need = scorer.stats()
    if need is None:
        return None
    from kl_filter.stages.stats import ensure_stats

    stats, _ = ensure_stats(Pool(str(pool_dir)), [need], stats_path=None, scores_dir=None, seed=seed,
                            overwrite=False, num_workers=1, progress=NoProgress, device="cpu", engine=LocalEngine(1))
    return stats


def scorer_columns(scorer: Scorer, pool_dir, seed: int) -> tuple[dict, dict]:
    """(provenance per column, ``{column: float32[pool rows]}``) of ``scorer`` over the pool, by the score stage
    in memory."""
    pool = Pool(str(pool_dir))
    res = run_scores(pool, [scorer], reference_stats(scorer, pool_dir, seed), None, LocalEngine(1), "cpu",
                     seed=seed)
    return res.provenance, {c: np.concatenate([res.in_memory[s.name][c] for s in pool.shards])
                            for c in scorer.outputs()}


def bucket_reference(scorer: BucketScorer, pool: Pool, seed: int) -> dict:
    """``{column: float32[pool rows]}`` of a bucket scorer by a plain pass: per pass, each bucket's rows from
    every shard in order-key order (ties in pool order), ``score_bucket``, float64 sums over the passes,
    ``combine``."""
    n = sum(pool.row_counts)
    sums: dict = {}
    scorer.bind(pool)
    emb = [pool.read_embeddings(s, scorer.keys, rows) for s, rows in zip(pool.shards, pool.row_counts)]
    for k in range(scorer.num_passes()):
        part = scorer.assign(pool, LocalEngine(1), seed, k, None)
        bucket, keys = np.concatenate(part.buckets), np.concatenate(part.keys)
        payload_all = {**{key: np.concatenate([e[key] for e in emb]) for key in scorer.keys},
                       **{name: np.concatenate(v) for name, v in part.extra.items()}}
        for j in range(part.num_buckets):
            rows = np.flatnonzero(bucket == j)
            if not len(rows):
                continue
            rows = rows[np.argsort(keys[rows], kind="stable")]
            values = scorer.score_bucket({name: v[rows] for name, v in payload_all.items()}, "cpu")
            for c, v in values.items():
                if c not in sums:
                    sums[c] = np.zeros(n, np.float64)
                sums[c][rows] += np.asarray(v, np.float64)
    return scorer.combine(sums, scorer.num_passes())


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@dataclass
class Runs:
    """What the class's runs left: the filter run, its UID files, scores directories and summaries."""

    filter: Filter
    pool_dir: str
    workdir: Path
    one: Path          # 1 worker, scores in scores_one (run first: in this process)
    two: Path          # 2 workers, scores in scores_two
    again: Path        # 2 workers again on scores_two: every column reused
    scores_one: Path
    scores_two: Path
    summaries: dict    # "one", "two", "again" -> run_filter's summary


# ---- the shared part of both contracts ----------------------------------------------------------------------------
class PluginContract:
    """Fixtures and checks shared by :class:`FilterContract` and :class:`ScorerContract` (subclass those)."""

    params: ClassVar[dict] = {}        # the plugin's parameters (a registered name validates them)
    pool_rows: ClassVar[int] = 900
    pool_shards: ClassVar[int] = 3
    pool_seed: ClassVar[int] = 0
    pool_columns: ClassVar[dict] = {}  # parquet columns beyond DataComp's: {name: fn(rng, n) -> values}
    seed: ClassVar[int] = 3            # the runs' --seed

    def make_assets(self, root: Path) -> dict:
        """Write the files the plugin reads under ``root`` and return the parameters naming them (merged over
        ``params``); may ``pytest.skip`` when an external resource is missing. Default: none."""
        return {}

    def build(self, params: dict):
        raise NotImplementedError

    def filter_to_run(self, plugin) -> Filter:
        raise NotImplementedError

    def declared_keys(self, plugin) -> tuple:
        raise NotImplementedError

    # ---- fixtures (once per class) ------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def workdir(self, tmp_path_factory) -> Path:
        return tmp_path_factory.mktemp(type(self).__name__)

    @pytest.fixture(scope="class")
    def built_params(self, workdir) -> dict:
        root = workdir / "assets"
        root.mkdir()
        return {**self.params, **self.make_assets(root)}

    @pytest.fixture(scope="class")
    def plugin(self, built_params):
        p = self.build(dict(built_params))
        p.check_assets()
        return p

    @pytest.fixture(scope="class")
    def pool_dir(self, plugin, tmp_path_factory) -> str:
        keys = tuple(sorted(k for k in self.declared_keys(plugin) if k not in SYNTH_KEYS))
        spec = (self.pool_rows, self.pool_shards, self.pool_seed, keys)
        shared = not self.pool_columns  # functions are no key: a class with columns of its own gets its own pool
        cache = (str(tmp_path_factory.getbasetemp()), spec)
        if shared and cache in _POOLS:
            return _POOLS[cache]
        path = make_pool(tmp_path_factory.mktemp("pool") / "pool", self.pool_rows, self.pool_shards, self.pool_seed,
                         keys=keys, columns=dict(self.pool_columns))
        if shared:
            _POOLS[cache] = path
        return path

    @pytest.fixture(scope="class")
    def runs(self, plugin, pool_dir, workdir) -> Runs:
        flt = self.filter_to_run(plugin)
        d = workdir / "runs"
        r = Runs(flt, pool_dir, workdir, d / "one.npy", d / "two.npy", d / "again.npy", d / "scores_one",
                 d / "scores_two", {})
        # one worker first, in this process: what forked workers inherit (a loaded WordNet) is then ready
        r.summaries["one"] = run_once(flt, pool_dir, r.one, r.scores_one, 1, self.seed)
        r.summaries["two"] = run_once(flt, pool_dir, r.two, r.scores_two, 2, self.seed)
        r.summaries["again"] = run_once(flt, pool_dir, r.again, r.scores_two, 2, self.seed)
        return r

    # ---- the shared checks ---------------------------------------------------------------------------------------
    def check_params(self, plugin):
        """``params()`` is the signature's, JSON, and rebuilds an equal plugin; returns the rebuilt one."""
        from kl_filter.core.params import signature_params

        params = plugin.params()
        assert set(params) == {p.name for p in signature_params(type(plugin))}
        json.dumps(params)  # recorded in the sidecar and in provenance: JSON as they are
        again = self.rebuild(plugin, params)
        assert again.params() == params, "params() does not rebuild the same plugin"
        assert repr(again) == repr(plugin)
        return again

    def rebuild(self, plugin, params: dict):
        """``type(plugin)`` built from ``params`` through the signature's validation (as flags and recipes are)."""
        registry = SCORERS if isinstance(plugin, Scorer) else FILTERS
        return registry.build_class(type(plugin), plugin.name or type(plugin).__name__, params)

    def test_deterministic(self, runs):
        one, two, again = (p.read_bytes() for p in (runs.one, runs.two, runs.again))
        assert one == two, "the UID file differs between 1 and 2 workers"
        assert again == two, "a rerun on the same scores directory wrote other bytes"
        s = runs.summaries
        pool = Pool(runs.pool_dir)
        names = derived_columns(runs.filter)
        assert s["two"]["scores"]["shards_computed"] == (len(pool) if names else 0)
        assert s["again"]["scores"]["shards_computed"] == 0, "a rerun recomputed stored columns: unstable provenance?"
        assert s["again"]["stats"] == s["two"]["stats"]
        a, b = stored_columns(pool, runs.scores_one, names), stored_columns(pool, runs.scores_two, names)
        for c in names:
            assert _same_bits(a[c], b[c]), f"column {c!r} differs between 1 and 2 workers"

    def test_reads_only_declared(self, runs):
        columns, keys = declared_reads(runs.filter)
        # one stripped copy per pool and declaration, beside the pool (classes declaring the same share it)
        digest = hashlib.sha256(json.dumps([sorted(columns), sorted(keys)]).encode()).hexdigest()[:12]
        stripped = Path(runs.pool_dir).parent / f"stripped_{digest}"
        if not stripped.exists():
            strip_pool(runs.pool_dir, stripped.with_suffix(".tmp"), columns, keys).rename(stripped)
        out = runs.workdir / "stripped.npy"
        run_once(runs.filter, stripped, out, runs.workdir / "stripped_scores", 1, self.seed)
        assert out.read_bytes() == runs.one.read_bytes(), (
            f"on a pool holding only the declared columns {columns} and keys {keys}, the UID file differs")

    def check_uid_file(self, runs) -> np.ndarray:
        """The UID file of the 2-worker run: valid, its sidecar's counts adding up; returns it."""
        flt, pool = runs.filter, Pool(runs.pool_dir)
        kept = load_uids(str(runs.two))
        every = pool_uids(pool)
        repeats = any(r.repeats for r in flt.rules())
        check_uid_array(kept, str(runs.two), every, allow_duplicates=repeats)
        side = json.loads(Path(sidecar_path(str(runs.two))).read_text())
        n = len(every)
        assert side["name"] == flt.name and side["pool_rows"] == n and side["kept"] == len(kept)
        assert side["kept_distinct"] == len(np.unique(kept))
        assert side["params"] == json.loads(json.dumps(flt.params()))
        steps = len(flt.rules()) + (flt.refine is not None)
        assert len(side["removed"]) == steps
        assert side["kept_distinct"] + sum(s["removed"] for s in side["removed"]) == n
        return kept


# ---- filters -----------------------------------------------------------------------------------------------------
class FilterContract(PluginContract):
    """Contract tests of a filter plugin. Set ``filter`` (the class, or its registered name) and ``params``."""

    filter: ClassVar[Any] = None

    def build(self, params: dict) -> Filter:
        if isinstance(self.filter, str):
            return build_filter(self.filter, params)
        if not (isinstance(self.filter, type) and issubclass(self.filter, Filter)):
            raise TypeError(f"{type(self).__name__}: set filter = a Filter subclass or a registered filter name")
        return FILTERS.build_class(self.filter, self.filter.name or self.filter.__name__, params)

    def filter_to_run(self, plugin) -> Filter:
        return plugin

    def declared_keys(self, plugin) -> tuple:
        return tuple(declared_reads(plugin)[1])

    def test_params_are_its_signature(self, plugin):
        assert self.check_params(plugin).rules() == plugin.rules()

    def test_registered_name_resolves(self, plugin):
        assert isinstance(plugin.name, str) and plugin.name, "a filter needs a name (its --name)"
        if plugin.name not in list_filters():
            pytest.skip(f"filter {plugin.name!r} is not registered here (install the distribution declaring it)")
        assert get_filter_class(plugin.name) is type(plugin)
        assert build_filter(plugin.name, plugin.params()).params() == plugin.params()

    def test_rules(self, plugin):
        rules = plugin.rules()
        assert isinstance(rules, list) and all(isinstance(r, Rule) for r in rules)
        assert rules == plugin.rules(), "rules() must give the same rules each time"
        check_rules(rules, plugin.refine is not None, plugin.name)
        for r in rules:
            assert all(isinstance(c, str) and c for c in r.reads())
        for s in plugin.scorers():
            assert isinstance(s, Scorer) and s.outputs()
        for attr in ("columns", "keys", "refine_columns"):
            assert all(isinstance(c, str) and c for c in getattr(plugin, attr)), f"{attr}: names of columns or keys"

    def test_score_columns(self, plugin, runs):
        pool = Pool(runs.pool_dir)
        for shard in pool.shards:
            data = read_shard(plugin, pool, shard, runs.scores_two)  # only what it declares can be read
            cols = check_score_output(plugin, plugin.score(data), data.num_rows, shard.parquet)
            again = plugin.score(read_shard(plugin, pool, shard, runs.scores_two))
            assert set(again) == set(cols)
            for c, v in cols.items():
                assert _same_bits(np.asarray(again[c]), v), f"score() column {c!r} differs between two calls"

    def test_refine_only_narrows(self, plugin, pool_dir):
        if plugin.refine is None:
            pytest.skip("no refine step")
        pool = Pool(pool_dir)
        rng = np.random.default_rng(self.seed)
        for shard, n in zip(pool.shards, pool.row_counts):
            data = pool.read(shard, plugin.refine_columns)
            every = plugin.refine(data, np.ones(n, dtype=bool))
            assert isinstance(every, np.ndarray) and every.dtype == bool and every.shape == (n,)
            keep = rng.random(n) < 0.5
            given = keep.copy()
            some = plugin.refine(data, given)
            assert np.array_equal(given, keep), "refine() changed the mask it was given"
            assert not (some & ~keep).any(), "refine() kept a row the rules had dropped"
            assert np.array_equal(some, every & keep), "refine() on the candidates differs from every row AND keep"

    def test_uid_file(self, runs):
        kept = self.check_uid_file(runs)
        want = reference_keep(runs.filter, Pool(runs.pool_dir), runs.scores_two)
        if want is not None:
            assert np.array_equal(kept, want), "the UID file is not what DataComp's rule keeps"


# ---- scorers ------------------------------------------------------------------------------------------------------
class ScorerContract(PluginContract):
    """Contract tests of a scorer plugin. Set ``scorer`` (the class, or its registered name), ``params``, and
    ``changed_params``: parameters that change some column's values (so its provenance must change)."""

    scorer: ClassVar[Any] = None
    changed_params: ClassVar[dict] = {}
    fraction: ClassVar[float] = 0.3  # the top cut run on the scorer's first column

    def scorer_class(self) -> type:
        if isinstance(self.scorer, str):
            return SCORERS.get(self.scorer)
        if not (isinstance(self.scorer, type) and issubclass(self.scorer, Scorer)):
            raise TypeError(f"{type(self).__name__}: set scorer = a Scorer subclass or a registered scorer name")
        return self.scorer

    def build(self, params: dict) -> Scorer:
        cls = self.scorer_class()
        return SCORERS.build_class(cls, cls.name or cls.__name__, params)

    def changed(self, params: dict) -> dict:
        """The parameters of a scorer whose values differ (default: ``params`` updated by ``changed_params``)."""
        return {**params, **self.changed_params}

    def declared_keys(self, plugin) -> tuple:
        need = plugin.stats()
        return (*plugin.keys, *((f"{need.arch}_img", f"{need.arch}_txt") if need else ()))

    def filter_to_run(self, scorer) -> Filter:
        """``--name SCORER --fraction F`` (its registered filter, when that is a top cut on it), else the same
        cut from Python: ``Cuts([Top(column, score=scorer, fraction=F)])``."""
        from kl_filter.filters.cuts import Cuts
        from kl_filter.filters.presets import ScorerCut

        outs = tuple(scorer.outputs())
        if scorer.name in SCORERS.names() and SCORERS.get(scorer.name) is type(scorer):
            cls = get_filter_class(scorer.name)
            if (issubclass(cls, ScorerCut) and cls.scorer_names[:1] == (scorer.name,) and "fraction" in cls.cut_flags
                    and (len(outs) == 1 or "column" in cls.cut_flags)):
                column = {"column": outs[0]} if len(outs) > 1 else {}
                flt = build_filter(scorer.name, {**scorer.params(), "fraction": self.fraction, **column})
                if flt.primary.params() == scorer.params():
                    return flt
        return Cuts([Top(outs[0], score=scorer, fraction=self.fraction)])

    @pytest.fixture(scope="class")
    def stats(self, plugin, pool_dir):
        return reference_stats(plugin, pool_dir, self.seed)

    def test_outputs_unique_and_stable(self, plugin, built_params):
        outs = plugin.outputs()
        assert isinstance(outs, (tuple, list)) and len(outs) > 0
        assert all(isinstance(c, str) and c and c != "uid" for c in outs), f"column names, got {outs!r}"
        assert len(set(outs)) == len(outs), f"outputs() repeats a name: {outs!r}"
        assert tuple(plugin.outputs()) == tuple(outs), "outputs() must give the same names each time"
        assert tuple(self.build(dict(built_params)).outputs()) == tuple(outs), "another instance names them otherwise"

    def test_params_are_its_signature(self, plugin):
        assert tuple(self.check_params(plugin).outputs()) == tuple(plugin.outputs())

    def test_registered_name_resolves(self, plugin):
        assert isinstance(plugin.name, str) and plugin.name, "a scorer needs a name (its --name)"
        if plugin.name not in SCORERS.names():
            pytest.skip(f"scorer {plugin.name!r} is not registered here (install the distribution declaring it)")
        assert SCORERS.get(plugin.name) is type(plugin)
        assert build_scorer(plugin.name, plugin.params()).params() == plugin.params()
        assert plugin.name in list_filters(), "a registered scorer is a filter too"

    def test_stats_need(self, plugin):
        need = plugin.stats()
        assert need is None or isinstance(need, StatsNeed)
        assert plugin.stats() == need, "stats() must give the same need each time"
        if need is not None:
            assert need.arch in ARCHS, f"reference statistics exist for {ARCHS}, not {need.arch!r}"
        if isinstance(plugin, BucketScorer):
            assert need is None, "the bucket stage gives score_bucket no statistics"

    def test_compute(self, plugin, pool_dir, stats):
        """On each shard read with the declared columns and keys only, and the statistics of exactly the declared
        need (None without one): ``outputs()`` as 1-d float32 or bool arrays of the shard's length, twice the
        same bits."""
        if isinstance(plugin, BucketScorer):
            pytest.skip("a bucket scorer scores buckets: test_score_bucket")
        pool = Pool(pool_dir)
        plugin.bind(pool)
        for shard in pool.shards:
            out = plugin.compute(pool.read(shard, plugin.columns, plugin.keys), stats, "cpu")
            assert isinstance(out, dict) and set(out) == set(plugin.outputs())
            n = pool.row_counts[shard.index]
            for c, v in out.items():
                assert isinstance(v, np.ndarray) and v.shape == (n,), f"{c}: shape {np.shape(v)}, expected ({n},)"
                assert v.dtype in (np.float32, np.bool_), f"{c}: dtype {v.dtype}, expected float32 (or bool)"
            again = plugin.compute(pool.read(shard, plugin.columns, plugin.keys), stats, "cpu")
            for c, v in out.items():
                assert _same_bits(again[c], v), f"column {c!r} differs between two calls"

    def test_stored_columns(self, plugin, runs, stats):
        """What the runs stored is ``compute()``'s (for a bucket scorer: a plain pass over its buckets)."""
        pool = Pool(runs.pool_dir)
        stored = stored_columns(pool, runs.scores_two, plugin.outputs())
        if isinstance(plugin, BucketScorer):
            want = bucket_reference(plugin, pool, self.seed)
        else:
            plugin.bind(pool)
            parts = [plugin.compute(pool.read(s, plugin.columns, plugin.keys), stats, "cpu") for s in pool.shards]
            want = {c: np.concatenate([np.asarray(p[c], np.float32) for p in parts]) for c in plugin.outputs()}
        for c in plugin.outputs():
            assert _same_bits(stored[c], np.asarray(want[c], np.float32)), f"stored column {c!r} is not compute()'s"

    def test_bucket_partition(self, plugin, pool_dir):
        if not isinstance(plugin, BucketScorer):
            pytest.skip("not a bucket scorer")
        passes = plugin.num_passes()
        assert isinstance(passes, int) and passes >= 1
        pool = Pool(pool_dir)
        for k in range(min(passes, 2)):
            part = plugin.assign(pool, LocalEngine(1), self.seed, k, None)
            assert len(part.buckets) == len(part.keys) == len(pool.shards)
            assert isinstance(part.num_buckets, int) and part.num_buckets >= 1
            for b, keys, rows in zip(part.buckets, part.keys, pool.row_counts):
                assert b.shape == (rows,) and b.dtype.kind in "iu", "one bucket per row"
                assert rows == 0 or (b.min() >= 0 and b.max() < part.num_buckets)
                assert keys.shape == (rows,) and keys.dtype == np.uint64, "one uint64 order key per row"
            for name, per_shard in part.extra.items():
                assert [len(v) for v in per_shard] == list(pool.row_counts), f"extra {name!r}: one value per row"
            other = plugin.assign(pool, LocalEngine(2), self.seed, k, None)
            assert other.num_buckets == part.num_buckets
            for x, y in zip([*part.buckets, *part.keys], [*other.buckets, *other.keys]):
                assert np.array_equal(x, y), "the partition differs between 1 and 2 workers"

    def test_score_bucket(self, plugin, pool_dir):
        if not isinstance(plugin, BucketScorer):
            pytest.skip("not a bucket scorer")
        pool = Pool(pool_dir)
        plugin.bind(pool)
        part = plugin.assign(pool, LocalEngine(1), self.seed, 0, None)
        bucket, keys = np.concatenate(part.buckets), np.concatenate(part.keys)
        j = int(np.argmax(np.bincount(bucket, minlength=part.num_buckets)))
        rows = np.flatnonzero(bucket == j)
        rows = rows[np.argsort(keys[rows], kind="stable")]
        emb = [pool.read_embeddings(s, plugin.keys, n) for s, n in zip(pool.shards, pool.row_counts)]
        payload = {**{k: np.concatenate([e[k] for e in emb])[rows] for k in plugin.keys},
                   **{name: np.concatenate(v)[rows] for name, v in part.extra.items()}}
        out = plugin.score_bucket(dict(payload), "cpu")
        assert isinstance(out, dict) and set(out) == set(plugin.outputs())
        for c, v in out.items():
            v = np.asarray(v)
            assert v.shape == (len(rows),) and v.dtype.kind in "fb", f"{c}: one number per row of the bucket"
        again = plugin.score_bucket(dict(payload), "cpu")
        for c, v in out.items():
            assert _same_bits(np.asarray(again[c]), np.asarray(v)), f"score_bucket column {c!r} differs between calls"

    def test_provenance(self, plugin, pool_dir, stats):
        pool = Pool(pool_dir)
        plugin.bind(pool)
        again = self.rebuild(plugin, plugin.params())
        again.check_assets()
        again.bind(pool)
        for c in plugin.outputs():
            p = plugin.provenance(c, stats)
            assert isinstance(p, dict) and p, f"provenance({c!r}) must be a non-empty dict"
            text = json.dumps(p, sort_keys=True)  # stored in the score file's metadata
            assert json.dumps(again.provenance(c, stats), sort_keys=True) == text, (
                f"provenance({c!r}) differs between two equal scorers: a stored column would never be reused")

    def test_provenance_follows_the_values(self, plugin, built_params, pool_dir):
        changed = self.changed(dict(built_params))
        if changed == dict(built_params):
            pytest.skip("set changed_params: parameters that change a column's values")
        other = self.build(changed)
        other.check_assets()
        prov_a, cols_a = scorer_columns(plugin, pool_dir, self.seed)
        prov_b, cols_b = scorer_columns(other, pool_dir, self.seed)
        differ = set(cols_a) != set(cols_b)
        for c in set(cols_a) & set(cols_b):
            if not _same_bits(cols_a[c], cols_b[c]):
                differ = True
                assert prov_a[c] != prov_b[c], (f"column {c!r} has other values under {self.changed_params} but the "
                                                "same provenance: a stored column would be reused wrongly")
        assert differ, f"changed_params {self.changed_params} changed no column: give parameters the values depend on"

    def test_uid_file(self, plugin, runs):
        """The top ``fraction`` cut on the first column keeps what DataComp's rule keeps."""
        kept = self.check_uid_file(runs)
        pool = Pool(runs.pool_dir)
        want = reference_keep(runs.filter, pool, runs.scores_two)
        assert want is not None and np.array_equal(kept, want), "the UID file is not what DataComp's rule keeps"
        n = sum(pool.row_counts)
        assert len(kept) >= min(int(n * self.fraction) + 1, n)
