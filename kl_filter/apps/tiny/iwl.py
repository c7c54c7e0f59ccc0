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

This module defines the experiment (its prompt, students, metrics) and measures weights against the pool's ground
truth; :mod:`.iwl_run` runs it inside the track, :mod:`.iwl_stats` compares the students over seeds and
:mod:`.iwl_page` writes its page.

Record shape (``run.json``'s ``iwl``; :func:`.iwl_page.write_iwl` renders ``iwl.md`` and ``iwl.png`` from it alone)::

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

import numpy as np

from kl_filter.core.errors import KLFilterError

FAMILY = "l14"
PROMPT = "a handwritten digit"
PROMPT_CHOICE = (
    "the IWL authors' template is \"A photo of {domain}\", but this pool holds no photos of digits: its digit "
    "captions and the zero-shot digit prompts say \"handwritten\" (\"a handwritten digit {word}\" is one of the "
    "pool's four digit-caption templates and the first evaluation prompt), and \"photo\" is this pool's word for the "
    "scikit-image photos; so the domain in the pool's own words, one class-agnostic prompt that names no digit "
    "(docs/results.md compares the authors' template)")
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


def per_row(truth: dict, uids: list[str], values=None) -> np.ndarray:
    """Sum of ``values`` (default 1 per entry) per pool row, for a list of uids (repeats add up)."""
    pos = {u: i for i, u in enumerate(truth["uid"])}
    idx = np.fromiter((pos.get(u, -1) for u in uids), dtype=np.int64, count=len(uids))
    if (idx < 0).any():
        raise KLFilterError(f"{int((idx < 0).sum())} uids are not in the pool")
    return np.bincount(idx, weights=values, minlength=len(truth["uid"]))
