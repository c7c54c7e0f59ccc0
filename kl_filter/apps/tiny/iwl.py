"""The tiny track's IWL experiment (issues 17 and 25): students toward a target domain named by a prompt, at one or
more temperatures ``a``.

Importance Weight Learning weights each training pair by the density ratio w(x) ∝ p(x | t†) / p(x) =
exp(a·<x̂, p̂>) (:mod:`kl_filter.scorers.iwl`). Here:

* target domain: the pool's handwritten digits; target task: zero-shot digit classification (``zs_digits``, its
  macro F1 ``zs_digits_f1``); "the rest": zero-shot scenes (``zs_scenes``, ``zs_scenes_f1``) and retrieval
  (``ret_r1``);
* prompt: :data:`PROMPT`, encoded by the track's larger teacher (family l14, its checkpoint in the work dir)
  through the ``iwl`` filter's own scorer (:class:`kl_filter.scorers.iwl.IWLScorer`, the text tower loaded by
  ``embed``'s code);
* temperatures ``scales``: each a number or ``pool`` (the teacher's learned logit scale, from the pool's
  embeddings.json); default :data:`DEFAULT_SCALES`, the scorer's default (the authors' a = 10). Per scale one
  log-weight column (the same column name: one prompt; recomputed per scale, its provenance holds ``a``), one
  weights file ``iwl_weights_a{a}.parquet`` and one resampled subset ``iwl_resampled_a{a}.npy``;
* students, each seeing ``cfg.student_seen`` samples: ``uniform`` once (the pool, uniform sampling, open_clip's
  ClipLoss: the no_filter recipe's students when it ran, reused, else trained here), and per scale the
  :data:`STUDENTS`: ``iwl_resampled`` (``kl-filter select --name iwl --resample N``, N = pool rows, seed = pool
  seed, resharded with its duplicates) and three weighted students on the uniform student's data and batches:
  ``iwl_weighted_raw`` (the authors' loss with their raw exp(a·<x̂, p̂>)), ``iwl_weighted`` (the same loss, the
  weights normalised to mean 1 over the pool) and ``iwl_weighted_batch`` (Σ_j w_j ℓ_j / Σ_j w_j per batch).

Record shape (``run.json``'s ``iwl``; :func:`write_iwl` renders ``iwl.md`` and ``iwl.png`` from it alone)::

    {"prompt", "family", "model", "column", "prompt_sha256", "pool_rows", "seeds", "target", "rest", ...,
     "students": {"uniform": {doc, data, reused_from, runs: [{seed, <metrics>, train}], <metric>_mean, _std}},
     "scales": [{"tag", "requested", "logit_scale", "logit_scale_source",
                 "weights": {file, rows, mean, max, min, effective_sample_size, effective_sample_share,
                             log_weight_std, raw_mean},
                 "resample": {file, n, seed, distinct_uids, max_draws, ...},
                 "shares": {"pool" | "iwl_resampled" | "iwl_weights": {digit_images, clean_pairs, clean_digit_pairs}},
                 "students": {name: {... as uniform ...}}, "comparisons": [{student, metric, diff, se, verdict}],
                 "verdict": "..."}, ...],
     "reading": "..."}
"""

from __future__ import annotations

import math
import os
import shutil
import time

import numpy as np

from kl_filter.core.errors import KLFilterError

FAMILY = "l14"
PROMPT = "a handwritten digit"
PROMPT_CHOICE = (
    "the IWL authors' template is \"A photo of {domain}\", but this pool holds no photos of digits: its digit "
    "captions and the zero-shot digit prompts say \"handwritten\" (\"a handwritten digit {word}\" is one of the "
    "pool's four digit-caption templates and the first evaluation prompt), and \"photo\" is this pool's word for the "
    "scikit-image photos; so the domain in the pool's own words, one class-agnostic prompt that names no digit "
    "(the README compares the authors' template)")
TARGET_DOC = "the pool's handwritten digits; target task zero-shot digit classification (10 classes)"
REST_DOC = "zero-shot scene classification by shape (6 classes) and image-text retrieval"
DEFAULT_SCALES = (10.0,)  # the iwl scorer's default a: the authors'
UNIFORM = ("uniform", "the whole pool, uniform sampling with replacement, open_clip's ClipLoss")
STUDENTS = {
    "iwl_resampled": "the IWL-resampled subset (N = pool rows drawn ∝ weight, duplicates kept), uniform sampling, "
                     "ClipLoss",
    "iwl_weighted_raw": "the whole pool, the uniform student's data and batches (same seed), the authors' loss "
                        "(1/B) Σ_j w_j·½(CE_i2t_j + CE_t2i_j) with their raw w = exp(a·<x̂, p̂>)",
    "iwl_weighted": "the same loss and batches, w normalised to mean 1 over the pool",
    "iwl_weighted_batch": "the same batches, Σ_j w_j·½(CE_i2t_j + CE_t2i_j) / Σ_j w_j (self-normalised in each "
                          "batch; not the authors')",
}
SPEC = {"iwl_resampled": {}, "iwl_weighted_raw": {"raw_weights": True}, "iwl_weighted": {},
        "iwl_weighted_batch": {"per_batch": True}}
WEIGHTED = ("iwl_weighted_raw", "iwl_weighted", "iwl_weighted_batch")
METRICS = {"zs_digits": "digits acc", "zs_digits_f1": "digits macro-F1", "zs_scenes": "scenes acc",
           "zs_scenes_f1": "scenes macro-F1", "ret_r1": "retrieval R@1"}
SHARES = {"digit_images": "digit images", "clean_pairs": "clean pairs", "clean_digit_pairs": "clean digit pairs"}
PAPER_GAIN = ("the authors' IWL students beat uniform training by 2-8 points of zero-shot F1 on the target domain "
              "(Food-101, Pets, Flowers)")
PAPER_RANGE = (0.02, 0.08)


def parse_scales(text) -> list:
    """``--iwl_scales``: comma-separated numbers > 0 or ``pool`` (e.g. ``10,pool,2.71``), as floats and "pool";
    one line for anything else or a repeat."""
    from kl_filter.pool.temperature import check_logit_scale

    items = [t.strip() for t in str(text).split(",")] if isinstance(text, str) else list(text)
    out = []
    for t in items:
        if t == "pool":
            v = "pool"
        else:
            try:
                v = check_logit_scale(float(t), "each --iwl_scales value")
            except (TypeError, ValueError):
                raise KLFilterError(f"--iwl_scales takes numbers > 0 or pool, separated by commas; got {t!r}") from None
        if v in out:
            raise KLFilterError(f"--iwl_scales lists {v} twice")
        out.append(v)
    if not out:
        raise KLFilterError("--iwl_scales is empty")
    return out


def scale_tag(a: float) -> str:
    return f"a{a:g}"


# ---- weights for a training set --------------------------------------------------------------------------------------
def sample_weights(path: str, uids: list[str], column: str = "weight", raw: bool = False) -> np.ndarray:
    """Float64 weights of ``uids`` (one per training row, in its order) from a weights file (uid, ``column``);
    every uid must have one. ``raw``: exp(log_weight) instead, the unnormalised weight exp(a·<x̂, p̂>)."""
    import pyarrow.parquet as pq

    col = "log_weight" if raw else column
    t = pq.read_table(path, columns=["uid", col])
    pos = {u: i for i, u in enumerate(t.column("uid").to_pylist())}
    w = t.column(col).to_numpy().astype(np.float64)
    if raw:
        w = np.exp(w)
    idx = np.fromiter((pos.get(u, -1) for u in uids), dtype=np.int64, count=len(uids))
    if (idx < 0).any():
        first = uids[int(np.argmax(idx < 0))]
        raise KLFilterError(f"{int((idx < 0).sum())} training uids have no weight (first {first})", path)
    return w[idx]


# ---- the pool's ground truth -----------------------------------------------------------------------------------------
def truth_masks(truth: dict) -> dict[str, np.ndarray]:
    """Per pool row: a digit image (content drawn from the digits; junk rows replace the image, so they are not),
    a clean pair (its own caption), both."""
    kind = np.asarray(truth["kind"], dtype=object)
    digit = (np.asarray(truth["source"], dtype=object) == "digit") & (kind != "junk")
    clean = kind == "clean"
    return {"digit_images": digit, "clean_pairs": clean, "clean_digit_pairs": digit & clean}


def shares(truth: dict, mass: np.ndarray) -> dict[str, float]:
    """Share of ``mass`` (one non-negative number per pool row: 1, draws or weights) on each truth mask."""
    mass = np.asarray(mass, dtype=np.float64)
    total = mass.sum()
    return {k: float(mass[m].sum() / total) for k, m in truth_masks(truth).items()}


def _per_row(truth: dict, uids: list[str], values=None) -> np.ndarray:
    """Sum of ``values`` (default 1 per entry) per pool row, for a list of uids (repeats add up)."""
    pos = {u: i for i, u in enumerate(truth["uid"])}
    idx = np.fromiter((pos.get(u, -1) for u in uids), dtype=np.int64, count=len(uids))
    if (idx < 0).any():
        raise KLFilterError(f"{int((idx < 0).sum())} uids are not in the pool")
    return np.bincount(idx, weights=values, minlength=len(truth["uid"]))


# ---- statistics over seeds -------------------------------------------------------------------------------------------
def mean_std(runs: list[dict], metric: str) -> tuple[float, float]:
    v = np.array([r[metric] for r in runs], dtype=np.float64)
    return (float(v.mean()) if len(v) else float("nan")), (float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def student_record(doc: str, data: str, runs: list[dict], reused_from: str | None = None) -> dict:
    st = {"doc": doc, "data": data, "reused_from": reused_from, "runs": sorted(runs, key=lambda r: r["seed"])}
    for m in METRICS:
        st[f"{m}_mean"], st[f"{m}_std"] = mean_std(st["runs"], m)
    return st


def compare(a: dict, b: dict, metric: str) -> dict:
    """``a`` minus ``b`` on ``metric`` (students' means over seeds), with the standard error of the difference of
    two independent means sqrt(s_a²/n_a + s_b²/n_b) and the verdict at two standard errors (results.md's arrow
    rule: ``above``/``below``/``within``; ``untested`` with one seed or no spread at all)."""
    na, nb = len(a["runs"]), len(b["runs"])
    d = a[f"{metric}_mean"] - b[f"{metric}_mean"]
    se = math.sqrt(a[f"{metric}_std"] ** 2 / na + b[f"{metric}_std"] ** 2 / nb) if min(na, nb) > 1 else float("nan")
    if not se > 0:
        verdict = "untested"
    else:
        verdict = "above" if d > 2 * se else "below" if d < -2 * se else "within"
    return {"metric": metric, "diff": d, "se": se, "verdict": verdict}


VERDICT_WORDS = {"above": "better than uniform by more than two standard errors",
                 "below": "worse than uniform by more than two standard errors",
                 "within": "within two standard errors of uniform",
                 "untested": "not testable (no spread over the seeds)"}


def verdict_text(students: dict, comparisons: list[dict], seeds: int) -> str:
    """The sentences iwl.md states for one temperature, generated from the comparisons alone."""
    if seeds < 2:
        return ("One seed: no standard error, so no claim either way; run with --seeds 3 to test whether IWL beats "
                "uniform on the target.")
    by = {(c["student"], c["metric"]): c for c in comparisons}
    names = [s for s in STUDENTS if s in students]
    out = []
    for s in names:
        t, ta = by[(s, "zs_digits_f1")], by[(s, "zs_digits")]
        r, rr = by[(s, "zs_scenes_f1")], by[(s, "ret_r1")]
        out.append(f"{s}: on the target (digits), macro-F1 {100 * t['diff']:+.1f} points against uniform "
                   f"(2 SE = {200 * t['se']:.1f}): {VERDICT_WORDS[t['verdict']]}; accuracy {100 * ta['diff']:+.1f} "
                   f"points: {VERDICT_WORDS[ta['verdict']]}. On the rest, scenes macro-F1 {100 * r['diff']:+.1f} "
                   f"points: {VERDICT_WORDS[r['verdict']]}; retrieval R@1 {100 * rr['diff']:+.1f} points: "
                   f"{VERDICT_WORDS[rr['verdict']]}.")
    won = [s for s in names if by[(s, "zs_digits_f1")]["verdict"] == "above"]
    if won:
        out.append(f"The paper's gain ({PAPER_GAIN}) appears here for {' and '.join(won)}: target macro-F1 above "
                   f"uniform's by more than two standard errors over {seeds} seeds"
                   + ("; not for iwl_weighted_raw, the authors' own weighted loss." if "iwl_weighted_raw" in names
                      and "iwl_weighted_raw" not in won else "."))
    else:
        out.append(f"The paper's gain ({PAPER_GAIN}) does not appear here: no IWL student beats uniform on the "
                   f"target's macro-F1 by more than two standard errors over {seeds} seeds.")
    return " ".join(out)


def reading_text(scales: list[dict], seeds: int) -> str:
    """The sweep's reading against the paper's claim, generated from the per-scale comparisons."""
    if seeds < 2:
        return "One seed: no standard error, so the sweep makes no claim either way."
    lines = []
    for sc in scales:
        by = {c["student"]: c for c in sc["comparisons"] if c["metric"] == "zs_digits_f1"}
        parts = []
        for s in STUDENTS:
            if s not in by:
                continue
            c = by[s]
            where = ("inside" if PAPER_RANGE[0] <= c["diff"] <= PAPER_RANGE[1] else
                     "above" if c["diff"] > PAPER_RANGE[1] else "below")
            parts.append(f"{s} {100 * c['diff']:+.1f} ± {200 * c['se']:.1f} ({c['verdict']}; {where} the paper's "
                         "2-8)")
        lines.append(f"a = {sc['logit_scale']:.4g} (effective sample {100 * sc['weights']['effective_sample_share']:.1f}%"
                     f" of the rows, {100 * sc['shares']['iwl_weights']['digit_images']:.1f}% of the weight on digit "
                     f"images): digit macro-F1 against uniform, points ± 2 SE: " + "; ".join(parts) + ".")
    best = [(c["diff"], sc["logit_scale"], c["student"]) for sc in scales for c in sc["comparisons"]
            if c["metric"] == "zs_digits_f1" and c["verdict"] == "above"]
    weighted_won = [b for b in best if b[2] in WEIGHTED]
    tail = (f"The paper's claim ({PAPER_GAIN}): met here by {len(best)} of "
            f"{sum(len([s for s in STUDENTS if s in sc['students']]) for sc in scales)} settings"
            + (f", the largest gain {100 * max(best)[0]:+.1f} points ({max(best)[2]} at a = {max(best)[1]:.4g})"
               if best else "") + "; by the weighted loss in "
            + (", ".join(f"{s} at a = {a:.4g} ({100 * d:+.1f})" for d, a, s in sorted(weighted_won, reverse=True))
               if weighted_won else "no setting") + ".")
    return " ".join(lines + [tail])


# ---- the run ---------------------------------------------------------------------------------------------------------
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
    per_row_w = _per_row(truth, wt.column("uid").to_pylist(), w)
    draws = _per_row(truth, drawn)
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


# ---- outputs ---------------------------------------------------------------------------------------------------------
def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def _batch_stats(st: dict) -> tuple[float, float, float]:
    """Mean over seeds of the weighted student's per-batch weight mass (mean, coefficient of variation) and of
    its effective pairs per batch."""
    bs = [r["train"]["weights"] for r in st["runs"] if "batch_mass" in r["train"].get("weights", {})]
    if not bs:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.mean([b["batch_mass"]["mean"] for b in bs]))
    cv = float(np.mean([b["batch_mass"]["std"] / b["batch_mass"]["mean"] for b in bs]))
    return mean, cv, float(np.mean([b["batch_effective_pairs"]["mean"] for b in bs]))


def _classes(st: dict) -> str:
    v = [r.get("zs_digits_classes") for r in st["runs"]]
    return "/".join(str(x) for x in v) if all(x is not None for x in v) else "—"


def iwl_markdown(rec: dict, command: str, cfg: dict) -> str:
    """iwl.md, from run.json's ``iwl`` record (and the command and config it ran with) alone."""
    seeds = len(rec["seeds"])
    uni = rec["students"]["uniform"]
    L = ["# IWL on the tiny track: uniform vs importance-weighted students toward the handwritten digits", "",
         f"Generated by `{command}`; student seeds {rec['seeds']}, every number computed by the run (run.json, "
         "`iwl`). Importance Weight Learning (the KL paper's second application) weights each pair by "
         "w(x) ∝ exp(a·⟨x̂, p̂⟩), the density ratio p(x | t†)/p(x) CLIP estimates for a prompt t†, at the "
         "temperatures a below.", "",
         f"- Target domain: {rec['target']}. The rest: {rec['rest']}.",
         f"- Prompt t† = \"{rec['prompt']}\", encoded by the {rec['family']} teacher's text tower ({rec['model']}, "
         f"{rec['checkpoint']}) through the `iwl` scorer; weight column `{rec['column']}`. Why this text: "
         f"{rec['prompt_choice']}.",
         f"- Students (each sees {cfg['student_seen']:,} samples, batch {cfg['batch_size']}, lr {cfg['student_lr']}, "
         "AdamW, the recipes' hyper-parameters):",
         f"  - `uniform`: {uni['doc']}" + (f" (the `{uni['reused_from']}` recipe's students, reused: same seeds, "
                                          "same data)" if uni["reused_from"] else "")]
    L += [f"  - `{name}`: {doc}" for name, doc in STUDENTS.items()]
    L += ["", "## The temperatures", "",
          "| a | source | ESS (share of rows) | log-weight spread | raw weight mean (min, max) | weight on digit "
          "images | resampled: distinct uids (max draws) |", "|---|---|---|---|---|---|---|"]
    for sc in rec["scales"]:
        w, rs = sc["weights"], sc["resample"]
        L.append(f"| {sc['logit_scale']:.4g} | {sc['logit_scale_source']} | {w['effective_sample_size']:,.0f} "
                 f"({100 * w['effective_sample_share']:.1f}%) | {w['log_weight_std']:.3g} | {w['raw_mean']:.4g} "
                 f"({w['raw_min']:.3g}, {w['raw_max']:.4g}) | {100 * sc['shares']['iwl_weights']['digit_images']:.1f}% "
                 f"| {rs['distinct_uids']:,} ({rs['max_draws']}) |")
    L += ["", f"ESS = (Σw)²/Σw² over the {rec['pool_rows']:,} pool rows; the raw weight is the authors' "
          "exp(a·⟨x̂, p̂⟩) (bias 0), the normalised one that over its pool mean. Pool: "
          + ", ".join(f"{100 * rec['scales'][0]['shares']['pool'][k]:.1f}% {v}" for k, v in SHARES.items()) + ".",
          "", "## Students (mean ± std over the seeds)" if seeds > 1 else "## Students (1 seed)", "",
          "| a | student | " + " | ".join(METRICS.values()) + " | digit classes predicted (per seed) |",
          "|---|---|" + "---|" * (len(METRICS) + 1),
          "| | uniform | " + " | ".join(_fmt(uni[f"{m}_mean"], uni[f"{m}_std"], len(uni["runs"])) for m in METRICS)
          + f" | {_classes(uni)} |"]
    for sc in rec["scales"]:
        by = {(c["student"], c["metric"]): c for c in sc["comparisons"]}
        for name in STUDENTS:
            st = sc["students"][name]
            cells = []
            for m in METRICS:
                v = by.get((name, m), {}).get("verdict")
                cells.append(_fmt(st[f"{m}_mean"], st[f"{m}_std"], len(st["runs"]))
                             + (" ↑" if v == "above" else " ↓" if v == "below" else ""))
            L.append(f"| {sc['logit_scale']:.4g} | {name} | " + " | ".join(cells) + f" | {_classes(st)} |")
    L += ["", "Arrows: the mean differs from uniform's by more than two standard errors of the difference, "
          "sqrt(s²_iwl/n + s²_uniform/n) (seeds only; the pool, the weights and the subsets are fixed). Macro F1: the "
          "unweighted mean over the classes of 2TP/(2TP + FP + FN). Digit classes predicted: how many of the 10 "
          "classes the zero-shot predictions use (1 = the same class for every image).", "",
          "## What a weighted step trains on", "",
          "| a | student | weight mass per batch of " + str(cfg["batch_size"]) + " (mean; CV) | effective pairs per "
          "batch (Σw)²/Σw² |", "|---|---|---|---|"]
    for sc in rec["scales"]:
        for name in WEIGHTED:
            mean, cv, eff = _batch_stats(sc["students"][name])
            L.append(f"| {sc['logit_scale']:.4g} | {name} | {mean:.4g}; {cv:.2f} | {eff:.1f} |")
    L += ["", "Means over the seeds of each run's per-step statistics (the same batches for every weighted student "
          "of one seed; CV = std/mean over the steps).", "", "## Verdict per temperature", ""]
    for sc in rec["scales"]:
        L += [f"**a = {sc['logit_scale']:.4g}.** {sc['verdict']}", ""]
    L += ["## Reading", "", rec["reading"], ""]
    return "\n".join(L)


def write_iwl(out: str, rec: dict, command: str, cfg: dict) -> None:
    from kl_filter.core.atomic import write_bytes

    write_bytes(os.path.join(out, "iwl.md"), iwl_markdown(rec, command, cfg).encode())
    _chart(os.path.join(out, "iwl.png"), rec)


def _chart(path: str, rec: dict) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kl_filter.core.atomic import write_bytes

    seeds = len(rec["seeds"])
    panels = (("zs_digits_f1", "digits macro-F1 (target)"), ("zs_scenes_f1", "scenes macro-F1"),
              ("ret_r1", "retrieval R@1"))
    scales = rec["scales"]
    x = np.arange(len(scales))
    width = 0.8 / len(STUDENTS)
    colours = {"iwl_resampled": "#1f77b4", "iwl_weighted_raw": "#d62728", "iwl_weighted": "#ff7f0e",
               "iwl_weighted_batch": "#2ca02c"}
    uni = rec["students"]["uniform"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0))
    for ax, (m, label) in zip(axes, panels):
        for k, name in enumerate(STUDENTS):
            st = [sc["students"][name] for sc in scales]
            ax.bar(x + (k - (len(STUDENTS) - 1) / 2) * width, [s[f"{m}_mean"] for s in st], width,
                   yerr=[s[f"{m}_std"] for s in st] if seeds > 1 else None, capsize=2, label=name,
                   color=colours[name])
        ax.axhline(uni[f"{m}_mean"], color="#555555", ls="--", lw=1, label="uniform")
        ax.set_xticks(x)
        ax.set_xticklabels([f"a = {sc['logit_scale']:.3g}" for sc in scales])
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"IWL toward \"{rec['prompt']}\": students' mean"
                 + (f" ± std over {seeds} seeds" if seeds > 1 else ", 1 seed"), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
