"""The IWL experiment's statistics over seeds (:mod:`.iwl`): each student's mean ± std, its difference from the
uniform student with the standard error, and the sentences ``iwl.md`` states from them."""

from __future__ import annotations

import math

import numpy as np

from kl_filter.apps.tiny.iwl import METRICS, PAPER_GAIN, PAPER_RANGE, STUDENTS, WEIGHTED


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
