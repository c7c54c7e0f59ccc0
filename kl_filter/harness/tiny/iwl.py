"""The tiny track's IWL experiment (issue 17): three students per seed toward a target domain named by a prompt.

Importance Weight Learning weights each training pair by the density ratio w(x) ∝ p(x | t†) / p(x) =
exp(a·<u_x, u_t†>) / Z (:mod:`kl_filter.scores.iwl`). Here:

* target domain: the pool's handwritten digits; target task: zero-shot digit classification (``zs_digits``, its
  macro F1 ``zs_digits_f1``); "the rest": zero-shot scenes (``zs_scenes``, ``zs_scenes_f1``) and retrieval
  (``ret_r1``);
* prompt: :data:`PROMPT`, encoded by the track's larger teacher (family l14, its checkpoint in the work dir)
  through the ``iwl`` filter's own scorer (:class:`kl_filter.scores.iwl.IWLScorer`, the text tower loaded by
  ``embed``'s code); the logit scale ``a`` is the scorer's default, never set here (the one in use and its source
  are read back from the weights file's provenance and recorded);
* students, each seeing ``cfg.student_seen`` samples (:data:`STUDENTS`): ``uniform`` (the pool, uniform
  sampling, open_clip's ClipLoss: the no_filter recipe's students when it ran, reused, else trained here),
  ``iwl_resampled`` (``kl-filter select --name iwl --resample N`` with N = pool rows and seed = pool seed,
  resharded with its duplicates, trained like any recipe) and ``iwl_weighted`` (the uniform student's data and
  batches, each batch's loss :func:`.models.weighted_clip_loss` with the weights of ``kl-filter weights``).

Record shape (``run.json``'s ``iwl``; :func:`write_iwl` renders ``iwl.md`` and ``iwl.png`` from it alone)::

    {"prompt", "family", "model", "column", "prompt_sha256", "logit_scale", "logit_scale_source",
     "weights": {file, rows, mean, max, effective_sample_size, ...}, "resample": {n, seed, distinct_uids, ...},
     "shares": {"pool" | "iwl_resampled" | "iwl_weights": {digit_images, clean_pairs, clean_digit_pairs}},
     "students": {name: {doc, data, reused_from, runs: [{seed, <metrics>, train}], <metric>_mean, <metric>_std}},
     "comparisons": [{student, metric, diff, se, verdict}], "verdict": "...", "seeds": [...], ...}
"""

from __future__ import annotations

import math
import os
import shutil
import time

import numpy as np

from ...errors import KLFilterError

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
RESAMPLED = "iwl_resampled"            # the UID file's name in OUT/subsets
WEIGHTS_FILE = "iwl_weights.parquet"   # the weights file, in OUT/subsets beside it
STUDENTS = {
    "uniform": "the whole pool, uniform sampling with replacement, open_clip's ClipLoss",
    "iwl_resampled": "the IWL-resampled subset (N = pool rows drawn ∝ weight, duplicates kept), uniform sampling, "
                     "ClipLoss",
    "iwl_weighted": "the whole pool, the uniform student's data and batches (same seed), each batch's loss "
                    "mean_j w_j·½(CE_i2t_j + CE_t2i_j)",
}
METRICS = {"zs_digits": "digits acc", "zs_digits_f1": "digits macro-F1", "zs_scenes": "scenes acc",
           "zs_scenes_f1": "scenes macro-F1", "ret_r1": "retrieval R@1"}
TARGET_METRICS = ("zs_digits_f1", "zs_digits")
REST_METRICS = ("zs_scenes_f1", "zs_scenes", "ret_r1")
SHARES = {"digit_images": "digit images", "clean_pairs": "clean pairs", "clean_digit_pairs": "clean digit pairs"}
PAPER_GAIN = ("the authors' IWL students beat uniform training by 2-8 points of zero-shot F1 on Food-101, Pets and "
              "Flowers")


# ---- weights for a training set --------------------------------------------------------------------------------------
def sample_weights(path: str, uids: list[str], column: str = "weight") -> np.ndarray:
    """Float64 weights of ``uids`` (one per training row, in its order) from a weights file (uid, ``column``);
    every uid must have one."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["uid", column])
    pos = {u: i for i, u in enumerate(t.column("uid").to_pylist())}
    w = t.column(column).to_numpy().astype(np.float64)
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
    """The sentences iwl.md states, generated from the comparisons alone."""
    if seeds < 2:
        return ("One seed: no standard error, so no claim either way; run with --seeds 3 to test whether IWL beats "
                "uniform on the target.")
    by = {(c["student"], c["metric"]): c for c in comparisons}
    out = []
    for s in ("iwl_resampled", "iwl_weighted"):
        t, ta = by[(s, "zs_digits_f1")], by[(s, "zs_digits")]
        r, rr = by[(s, "zs_scenes_f1")], by[(s, "ret_r1")]
        out.append(f"{s}: on the target (digits), macro-F1 {100 * t['diff']:+.1f} points against uniform "
                   f"(2 SE = {200 * t['se']:.1f}): {VERDICT_WORDS[t['verdict']]}; accuracy {100 * ta['diff']:+.1f} "
                   f"points: {VERDICT_WORDS[ta['verdict']]}. On the rest, scenes macro-F1 {100 * r['diff']:+.1f} "
                   f"points: {VERDICT_WORDS[r['verdict']]}; retrieval R@1 {100 * rr['diff']:+.1f} points: "
                   f"{VERDICT_WORDS[rr['verdict']]}.")
    won = [s for s in ("iwl_resampled", "iwl_weighted") if by[(s, "zs_digits_f1")]["verdict"] == "above"]
    if won:
        out.append(f"The paper's gain ({PAPER_GAIN}) appears here for {' and '.join(won)}: target macro-F1 above "
                   f"uniform's by more than two standard errors over {seeds} seeds"
                   + ("; not for iwl_weighted, the authors' own weighted loss." if "iwl_weighted" not in won else "."))
    else:
        out.append(f"The paper's gain ({PAPER_GAIN}) does not appear here: neither IWL student beats uniform on the "
                   f"target's macro-F1 by more than two standard errors over {seeds} seeds.")
    return " ".join(out)


# ---- the run ---------------------------------------------------------------------------------------------------------
class IWLRun:
    """The experiment's state inside :func:`.track.run_track`: :meth:`prepare` (subset, weights), :meth:`submit`
    (students), :meth:`collect` (their results), :meth:`record` (run.json's ``iwl``)."""

    def __init__(self):
        self.rec: dict = {}
        self.futs: list = []
        self.runs: dict[str, list] = {}

    @classmethod
    def prepare(cls, *, meta_dir: str, pool_dir: str, subsets_dir: str, work: str, scores_dir: str, truth: dict,
                teacher_model: str, teacher_checkpoint: str, model_config: str, pool_seed: int, num_workers: int,
                uniform_dir: str | None) -> "IWLRun":
        """The IWL filter's resampled subset (UID file + sidecar in ``subsets_dir``, resharded in the work dir) and
        the weights file (``subsets_dir``), both from ONE scorer: the same log-weight column, the same ``a``.

        ``uniform_dir``: the no_filter recipe's reshard (its students are the uniform ones), or None (the uniform
        student trains here, on the pool's own tars)."""
        from ...engines import get_engine
        from ...filters import build_filter
        from ...progress import NoProgress
        from ...selection.runner import RunContext, run_filter
        from ...selection.weights import write_weights
        from ...uids import load_uids, u8u8_to_hex
        from ..reshard import reshard

        self = cls()
        t0 = time.perf_counter()
        n = len(truth["uid"])
        params = {"arch": FAMILY, "prompt": [PROMPT], "model": teacher_model, "checkpoint": teacher_checkpoint,
                  "model_config": [model_config], "resample": n}  # no logit_scale: the scorer's default
        flt = build_filter("iwl", params)
        save = os.path.join(subsets_dir, f"{RESAMPLED}.npy")
        summary = run_filter(flt, meta_dir, save, RunContext(num_workers=num_workers, seed=pool_seed, device="cpu",
                                                             scores_dir=scores_dir, progress=NoProgress),
                             recipe=RESAMPLED)
        rule = next(f for f in summary["rules"] if f.get("rule") == "resample")
        drawn = [u.decode() for u in u8u8_to_hex(load_uids(save))]
        if len(drawn) != n:
            raise KLFilterError(f"{RESAMPLED}: {len(drawn)} draws, expected {n}", save)
        scorer = flt.scorers()[0]
        weights_path = os.path.join(subsets_dir, WEIGHTS_FILE)
        ws = write_weights(meta_dir, scorer, weights_path, engine=get_engine("local", num_workers),
                           scores_dir=scores_dir, device="cpu")  # reuses the filter's column
        col = ws["columns"]["weight"]
        prov = col["provenance"]
        if col["score_column"] != flt.column:
            raise KLFilterError(f"the weights file weighs {col['score_column']}, the subset {flt.column}")

        import pyarrow.parquet as pq

        wt = pq.read_table(weights_path, columns=["uid", "weight"])
        w = wt.column("weight").to_numpy().astype(np.float64)
        per_row_w = _per_row(truth, wt.column("uid").to_pylist(), w)
        draws = _per_row(truth, drawn)

        self.resampled_dir = os.path.join(work, "reshard", RESAMPLED)
        if os.path.isdir(self.resampled_dir):
            shutil.rmtree(self.resampled_dir)
        meta = reshard(pool_dir, save, self.resampled_dir, num_workers=num_workers)
        if meta["output_count"] != n:
            raise KLFilterError(f"{RESAMPLED}: resharded {meta['output_count']} samples but the UID file has {n}",
                                self.resampled_dir)
        self.weights_path = weights_path
        self.uniform_dir = uniform_dir or pool_dir
        self.reuse_uniform = uniform_dir is not None
        self.n = n
        self.rec = {
            "target": TARGET_DOC, "rest": REST_DOC, "prompt": PROMPT, "prompt_choice": PROMPT_CHOICE,
            "family": FAMILY, "model": teacher_model, "checkpoint": os.path.basename(teacher_checkpoint),
            "column": flt.column, "prompt_sha256": prov.get("prompt_sha256"),
            "logit_scale": prov.get("logit_scale"),
            "logit_scale_source": prov.get("logit_scale_source") or
            "the iwl scorer's default (no --logit_scale given by the track)",
            "pool_rows": n,
            "weights": {"file": WEIGHTS_FILE, "rows": ws["rows"], "mean": float(w.mean()), "max": float(w.max()),
                        "min": float(w.min()), "effective_sample_size": col["effective_sample_size"],
                        "effective_sample_share": col["effective_sample_share"],
                        "log_weight_std": col.get("log_weight_std")},
            "resample": {"file": f"{RESAMPLED}.npy", "n": n, "seed": pool_seed, "method": rule.get("method"),
                         "uniform_draw": rule.get("uniform_draw"),
                         "effective_sample_size": rule.get("effective_sample_size"),
                         "distinct_uids": int((draws > 0).sum()), "max_draws": int(draws.max()),
                         "reshard": {k: meta[k] for k in ("output_count", "output_shard_count", "subset_not_found")}},
            "shares": {"pool": shares(truth, np.ones(n)), "iwl_resampled": shares(truth, draws),
                       "iwl_weights": shares(truth, per_row_w)},
            "filter_summary": {k: v for k, v in summary.items() if k != "argv"},
            "prepare_s": round(time.perf_counter() - t0, 2),
        }
        return self

    def submit(self, ex, task, base: dict, seeds: int) -> None:
        """Queue the students (``base``: the recipes' student spec without data_dir and seed)."""
        data = {"iwl_resampled": (self.resampled_dir, None), "iwl_weighted": (self.uniform_dir, self.weights_path)}
        if not self.reuse_uniform:
            data = {"uniform": (self.uniform_dir, None), **data}
        for name, (d, w) in data.items():
            self.runs[name] = []
            for s in range(seeds):
                spec = {**base, "data_dir": d, "seed": s, **({"weights": w} if w else {})}
                self.futs.append((name, s, ex.submit(task, spec)))

    def collect(self) -> None:
        for name, s, fut in self.futs:
            res = fut.result()
            if res["train"]["unique_samples"] != self.n:
                raise KLFilterError(f"IWL student {name}: trained on {res['train']['unique_samples']} samples, "
                                    f"expected {self.n}")
            self.runs[name].append({"seed": s, **res["eval"], "train": res["train"]})
        self.futs = []

    def record(self, rows: list[dict], seeds: int) -> dict:
        """run.json's ``iwl``: the uniform runs (reused from no_filter's row when it ran), means ± std, the
        comparisons with uniform and the verdict."""
        students = {}
        for name, doc in STUDENTS.items():
            if name == "uniform" and self.reuse_uniform:
                row = next(r for r in rows if r["recipe"] == "no_filter")
                runs, reused = row["runs"], "no_filter"
            else:
                runs, reused = self.runs[name], None
            st = {"doc": doc, "data": "pool" if name != "iwl_resampled" else RESAMPLED, "reused_from": reused,
                  "runs": sorted(runs, key=lambda r: r["seed"])}
            for m in METRICS:
                st[f"{m}_mean"], st[f"{m}_std"] = mean_std(st["runs"], m)
            students[name] = st
        comparisons = [{"student": s, **compare(students[s], students["uniform"], m)}
                       for s in ("iwl_resampled", "iwl_weighted") for m in METRICS]
        return {**self.rec, "seeds": list(range(seeds)), "students": students, "comparisons": comparisons,
                "verdict": verdict_text(students, comparisons, seeds)}


# ---- outputs ---------------------------------------------------------------------------------------------------------
def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def iwl_markdown(rec: dict, command: str, cfg: dict) -> str:
    """iwl.md, from run.json's ``iwl`` record (and the command and config it ran with) alone."""
    seeds = len(rec["seeds"])
    w, rs = rec["weights"], rec["resample"]
    L = ["# IWL on the tiny track: uniform vs importance-weighted students toward the handwritten digits", "",
         f"Generated by `{command}`; student seeds {rec['seeds']}, every number computed by the run (run.json, "
         "`iwl`). Importance Weight Learning (the KL paper's second application) weights each pair by "
         "w(x) ∝ exp(a·⟨u_x, u_t†⟩), the density ratio p(x | t†)/p(x) CLIP estimates for a prompt t†.", "",
         f"- Target domain: {rec['target']}. The rest: {rec['rest']}.",
         f"- Prompt t† = \"{rec['prompt']}\", encoded by the {rec['family']} teacher's text tower ({rec['model']}, "
         f"{rec['checkpoint']}) through the `iwl` scorer; weight column `{rec['column']}`. Why this text: "
         f"{rec['prompt_choice']}.",
         f"- Logit scale a = {rec['logit_scale']:.4g}, from {rec['logit_scale_source']}.",
         f"- Weights (`{w['file']}`): self-normalised to mean 1 over the {w['rows']:,} pool rows (mean of the stored "
         f"float32 weights {w['mean']:.6f}), max {w['max']:.4g}, min {w['min']:.3g}; effective sample size "
         f"(Σw)²/Σw² = {w['effective_sample_size']:,.1f} ({100 * w['effective_sample_share']:.1f}% of the rows).",
         f"- Resampled subset (`{rs['file']}`): {rs['n']:,} draws ∝ weight ({rs['method']}, seed {rs['seed']}), "
         f"{rs['distinct_uids']:,} distinct uids, at most {rs['max_draws']} draws of one uid; resharded with its "
         f"duplicates ({rs['reshard']['output_count']:,} samples).",
         f"- Students (each sees {cfg['student_seen']:,} samples, batch {cfg['batch_size']}, lr {cfg['student_lr']}, "
         "the recipes' hyper-parameters):"]
    names = [s for s in STUDENTS if s in rec["students"]]  # run.json stores keys sorted: the page keeps this order
    for name in names:
        st = rec["students"][name]
        L.append(f"  - `{name}`: {st['doc']}" + (f" (the `{st['reused_from']}` recipe's students, reused: same seeds, "
                                                 "same data)" if st["reused_from"] else ""))
    L += ["", "## Where the weight goes (share by ground-truth pool kind)", "",
          "| | " + " | ".join(SHARES.values()) + " |", "|---|" + "---|" * len(SHARES)]
    for key, label in (("pool", "pool (each row once)"), ("iwl_resampled", "IWL-resampled subset (draws)"),
                       ("iwl_weights", "IWL weight mass")):
        L.append(f"| {label} | " + " | ".join(f"{100 * rec['shares'][key][k]:.1f}%" for k in SHARES) + " |")
    L += ["", "Digit images: rows whose image is a handwritten digit (any caption; the junk rows' images are noise); "
          "clean pairs: the image with its own caption.", "",
          "## Students" + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else " (1 seed)"), "",
          "| student | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    by = {(c["student"], c["metric"]): c for c in rec["comparisons"]}
    for name in names:
        st = rec["students"][name]
        cells = []
        for m in METRICS:
            c = _fmt(st[f"{m}_mean"], st[f"{m}_std"], len(st["runs"]))
            v = by.get((name, m), {}).get("verdict")
            cells.append(c + (" ↑" if v == "above" else " ↓" if v == "below" else ""))
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += ["", "Arrows: the mean differs from uniform's by more than two standard errors of the difference, "
          "sqrt(s²_iwl/n + s²_uniform/n) (seeds only; the pool, the weights and the subset are fixed). Macro F1: the "
          "unweighted mean over the classes of 2TP/(2TP + FP + FN).", "", "## Verdict", "", rec["verdict"], ""]
    return "\n".join(L)


def write_iwl(out: str, rec: dict, command: str, cfg: dict) -> None:
    from ...atomic import write_bytes

    write_bytes(os.path.join(out, "iwl.md"), iwl_markdown(rec, command, cfg).encode())
    _chart(os.path.join(out, "iwl.png"), rec)


def _chart(path: str, rec: dict) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...atomic import write_bytes

    names = [s for s in STUDENTS if s in rec["students"]]
    seeds = len(rec["seeds"])
    x = np.arange(len(METRICS))
    width = 0.8 / len(names)
    colours = {"uniform": "#888888", "iwl_resampled": "#1f77b4", "iwl_weighted": "#ff7f0e"}
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for k, name in enumerate(names):
        st = rec["students"][name]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, [st[f"{m}_mean"] for m in METRICS], width,
               yerr=[st[f"{m}_std"] for m in METRICS] if seeds > 1 else None, capsize=3, label=name,
               color=colours.get(name))
    ax.set_xticks(x)
    ax.set_xticklabels(list(METRICS.values()))
    ax.set_ylabel("score")
    ax.legend(fontsize=9)
    ax.set_title(f"IWL toward \"{rec['prompt']}\" (a = {rec['logit_scale']:.3g}): students' mean"
                 + (f" ± std over {seeds} seeds" if seeds > 1 else ", 1 seed"), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
