"""The IWL experiment's run inside the tiny track (:mod:`.iwl`): per temperature the resampled subset and the
weights file, the students in the track's workers, and run.json's ``iwl`` record."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.apps.tiny.iwl import (DEFAULT_SCALES, FAMILY, METRICS, PROMPT, PROMPT_CHOICE, REST_DOC, SPEC, STUDENTS,
                                     TARGET_DOC, UNIFORM, per_row, parse_scales, scale_tag, shares)
from kl_filter.apps.tiny.iwl_stats import compare, reading_text, student_record, verdict_text


class IWLRun:
    """The experiment's state inside :func:`.track.run_track`: :meth:`prepare` (per scale: subset, weights),
    :meth:`submit` (students), :meth:`collect` (their results), :meth:`record` (run.json's ``iwl``)."""

    def __init__(self):
        self.rec: dict = {}
        self.scales: list[dict] = []   # per scale: its record (without students) and its data
        self.futs: list = []
        self.runs: dict = {}           # (tag or "uniform", student) -> runs

    @classmethod
    def prepare(cls, *, meta_dir: str, pool_dir: str, subsets_dir: str, work: str, scores_dir: str, truth: dict,
                teacher_model: str, teacher_checkpoint: str, model_config: str, pool_seed: int, num_workers: int,
                uniform_dir: str | None, scales=DEFAULT_SCALES) -> "IWLRun":
        """Per scale, the IWL filter's resampled subset (UID file + sidecar in ``subsets_dir``, resharded in the
        work dir) and the weights file (``subsets_dir``), both from ONE scorer: the same log-weight column, the
        same ``a``.

        ``uniform_dir``: the no_filter recipe's reshard (its students are the uniform ones), or None (the uniform
        student trains here, on the pool's own tars)."""
        self = cls()
        t0 = time.perf_counter()
        n = len(truth["uid"])
        self.n = n
        self.uniform_dir = uniform_dir or pool_dir
        self.reuse_uniform = uniform_dir is not None
        common = {"meta_dir": meta_dir, "pool_dir": pool_dir, "subsets_dir": subsets_dir, "work": work,
                  "scores_dir": scores_dir, "truth": truth, "pool_seed": pool_seed, "num_workers": num_workers,
                  "params": {"arch": FAMILY, "prompt": [PROMPT], "model": teacher_model,
                             "checkpoint": teacher_checkpoint, "model_config": [model_config], "resample": n}}
        for requested in parse_scales(list(scales) if not isinstance(scales, str) else scales):
            sc = _prepare_scale(requested=requested, **common)
            if any(s["rec"]["logit_scale"] == sc["rec"]["logit_scale"] for s in self.scales):
                raise KLFilterError(f"--iwl_scales: {requested} is a = {sc['rec']['logit_scale']:g} again")
            self.scales.append(sc)
        first = self.scales[0]["rec"]
        self.rec = {
            "target": TARGET_DOC, "rest": REST_DOC, "prompt": PROMPT, "prompt_choice": PROMPT_CHOICE,
            "family": FAMILY, "model": teacher_model, "checkpoint": os.path.basename(teacher_checkpoint),
            "column": first["column"], "prompt_sha256": first["prompt_sha256"], "pool_rows": n,
            "prepare_s": round(time.perf_counter() - t0, 2),
        }
        return self

    def submit(self, ex, task, base: dict, seeds: int) -> None:
        """Queue the students (``base``: the recipes' student spec without data_dir and seed)."""
        jobs = []
        if not self.reuse_uniform:
            jobs.append((("uniform", "uniform"), {"data_dir": self.uniform_dir}))
        for sc in self.scales:
            tag = sc["rec"]["tag"]
            for name in STUDENTS:
                d = sc["resampled_dir"] if name == "iwl_resampled" else self.uniform_dir
                extra = {} if name == "iwl_resampled" else {"weights": sc["weights_path"], **SPEC[name]}
                jobs.append(((tag, name), {"data_dir": d, **extra}))
        for key, spec in jobs:
            self.runs[key] = []
            for s in range(seeds):
                self.futs.append((key, s, ex.submit(task, {**base, **spec, "seed": s})))

    def collect(self) -> None:
        for key, s, fut in self.futs:
            res = fut.result()
            if res["train"]["unique_samples"] != self.n:
                raise KLFilterError(f"IWL student {'/'.join(key)}: trained on {res['train']['unique_samples']} "
                                    f"samples, expected {self.n}")
            self.runs[key].append({"seed": s, **res["eval"], "train": res["train"]})
        self.futs = []

    def record(self, rows: list[dict], seeds: int) -> dict:
        """run.json's ``iwl``: the uniform runs (reused from no_filter's row when it ran), per scale the students'
        means ± std, their comparisons with uniform and the verdict; the sweep's reading."""
        if self.reuse_uniform:
            row = next(r for r in rows if r["recipe"] == "no_filter")
            uniform = student_record(UNIFORM[1], "pool", row["runs"], "no_filter")
        else:
            uniform = student_record(UNIFORM[1], "pool", self.runs[("uniform", "uniform")])
        scales = []
        for sc in self.scales:
            rec = dict(sc["rec"])
            tag = rec["tag"]
            students = {name: student_record(doc, rec["resample"]["file"] if name == "iwl_resampled" else "pool",
                                             self.runs[(tag, name)]) for name, doc in STUDENTS.items()}
            comparisons = [{"student": s, **compare(students[s], uniform, m)} for s in STUDENTS for m in METRICS]
            rec.update(students=students, comparisons=comparisons,
                       verdict=verdict_text(students, comparisons, seeds))
            scales.append(rec)
        return {**self.rec, "seeds": list(range(seeds)), "students": {"uniform": uniform}, "scales": scales,
                "reading": reading_text(scales, seeds)}


def _prepare_scale(*, requested, meta_dir, pool_dir, subsets_dir, work, scores_dir, truth, pool_seed, num_workers,
                   params) -> dict:
    """One temperature: the filter's resampled subset (resharded) and the weights file, and their record."""
    import pyarrow.parquet as pq

    from kl_filter.engines import get_engine
    from kl_filter.filters import build_filter
    from kl_filter.pool import Pool
    from kl_filter.core.progress import NoProgress
    from kl_filter.runner import RunContext, run_filter
    from kl_filter.stages.weights import write_weights
    from kl_filter.core.uids import load_uids, u8u8_to_hex
    from kl_filter.apps.harness.reshard import reshard

    n = len(truth["uid"])
    flt = build_filter("iwl", {**params, "logit_scale": requested})
    scorer = flt.scorers()[0]
    scorer.bind(Pool(meta_dir))  # the value in use names the files (``pool``: the teacher's recorded one)
    tag = scale_tag(scorer.scale)
    name = f"iwl_resampled_{tag}"
    save = os.path.join(subsets_dir, f"{name}.npy")
    summary = run_filter(flt, meta_dir, save, RunContext(num_workers=num_workers, seed=pool_seed, device="cpu",
                                                         scores_dir=scores_dir, progress=NoProgress), recipe=name)
    rule = next(f for f in summary["rules"] if f.get("rule") == "resample")
    drawn = [u.decode() for u in u8u8_to_hex(load_uids(save))]
    if len(drawn) != n:
        raise KLFilterError(f"{name}: {len(drawn)} draws, expected {n}", save)
    weights_file = f"iwl_weights_{tag}.parquet"
    weights_path = os.path.join(subsets_dir, weights_file)
    ws = write_weights(meta_dir, flt.scorers()[0], weights_path, engine=get_engine("local", num_workers),
                       scores_dir=scores_dir, device="cpu")  # reuses the filter's column
    col = ws["columns"]["weight"]
    prov = col["provenance"]
    if col["score_column"] != flt.column or prov["logit_scale"] != scorer.scale:
        raise KLFilterError(f"the weights file weighs {col['score_column']} at a = {prov['logit_scale']}, the subset "
                            f"{flt.column} at {scorer.scale}")
    wt = pq.read_table(weights_path, columns=["uid", "weight", "log_weight"])
    w = wt.column("weight").to_numpy().astype(np.float64)
    raw = np.exp(wt.column("log_weight").to_numpy().astype(np.float64))
    per_row_w = per_row(truth, wt.column("uid").to_pylist(), w)
    draws = per_row(truth, drawn)
    resampled_dir = os.path.join(work, "reshard", name)
    if os.path.isdir(resampled_dir):
        shutil.rmtree(resampled_dir)
    meta = reshard(pool_dir, save, resampled_dir, num_workers=num_workers)
    if meta["output_count"] != n:
        raise KLFilterError(f"{name}: resharded {meta['output_count']} samples but the UID file has {n}", resampled_dir)
    rec = {
        "tag": tag, "requested": requested, "column": flt.column, "prompt_sha256": prov.get("prompt_sha256"),
        "logit_scale": prov["logit_scale"], "logit_scale_source": prov["logit_scale_source"],
        "weights": {"file": weights_file, "rows": ws["rows"], "mean": float(w.mean()), "max": float(w.max()),
                    "min": float(w.min()), "effective_sample_size": col["effective_sample_size"],
                    "effective_sample_share": col["effective_sample_share"],
                    "log_weight_std": col.get("log_weight_std"), "raw_mean": float(raw.mean()),
                    "raw_max": float(raw.max()), "raw_min": float(raw.min())},
        "resample": {"file": f"{name}.npy", "n": n, "seed": pool_seed, "method": rule.get("method"),
                     "uniform_draw": rule.get("uniform_draw"), "effective_sample_size": rule.get("effective_sample_size"),
                     "distinct_uids": int((draws > 0).sum()), "max_draws": int(draws.max()),
                     "reshard": {k: meta[k] for k in ("output_count", "output_shard_count", "subset_not_found")}},
        "shares": {"pool": shares(truth, np.ones(n)), "iwl_resampled": shares(truth, draws),
                   "iwl_weights": shares(truth, per_row_w)},
        "filter_summary": {k: v for k, v in summary.items() if k != "argv"},
    }
    return {"rec": rec, "resampled_dir": resampled_dir, "weights_path": weights_path}
