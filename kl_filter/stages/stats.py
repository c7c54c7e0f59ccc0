"""The statistics stage: the reference statistics a run's scorers declare, read when valid, computed when not.

Where they live: the file the user names (``--stats``: used as it is, or refused saying what it lacks), else
``SCORES_DIR/stats.npz`` (managed by this tool: extended with another family or the moments rather than lost,
redrawn when the sampling parameters asked for change), else in memory for this run only. A pass that is
interrupted resumes from its per-shard partials (:func:`kl_filter.stats.reference.compute_stats`).
"""

from __future__ import annotations

import logging

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import url_to_fs
from kl_filter.stats.reference import DEFAULT_SAMPLE_RATIO, compute_stats
from kl_filter.stats.statsfile import Stats, load_stats, parts_dir_for, save_stats

log = logging.getLogger(__name__)


def _merge(needs) -> tuple[list[str], bool, int | None, float | None]:
    """(families, moments, num_samples, sample_ratio) that satisfy every need; conflicting sampling is refused."""
    sampling = {(n.num_samples, n.sample_ratio) for n in needs}
    if len(sampling) > 1:
        raise KLFilterError(f"scorers of one run ask for different reference samples {sorted(map(str, sampling))}")
    num_samples, sample_ratio = sampling.pop()
    return sorted({n.arch for n in needs}), any(n.moments for n in needs), num_samples, sample_ratio


def _asked(have: Stats, seed: int, num_samples, sample_ratio) -> dict:
    """The sampling parameters asked for now, in the form ``Stats.sampling()`` reports them."""
    if num_samples is not None:
        return {"seed": seed, "num_samples": num_samples, "sample_ratio": -1.0, "caption_filter": True}
    ratio = sample_ratio or DEFAULT_SAMPLE_RATIO
    same_ratio = ratio == have.sampling()["sample_ratio"]
    return {"seed": seed, "num_samples": have.sampling()["num_samples"] if same_ratio else -1, "sample_ratio": ratio,
            "caption_filter": True}


def ensure_stats(pool, needs, *, stats_path: str | None, scores_dir: str | None, seed: int, overwrite: bool,
                 num_workers: int, progress, device: str, engine) -> tuple[Stats | None, str | None]:
    """(statistics covering every need, the file they live in) — ``(None, None)`` when nothing needs them.
    ``device`` (auto, cpu, cuda) is where the float64 moments are accumulated."""
    needs = [n for n in needs if n is not None]
    if not needs:
        return None, None
    archs, moments, num_samples, sample_ratio = _merge(needs)
    path = stats_path or (f"{scores_dir.rstrip('/')}/stats.npz" if scores_dir else None)
    exists = bool(path) and not overwrite and _exists(path)
    if exists and stats_path:  # a file the user named: use it as it is, or say what it lacks
        return load_stats(path, pool, archs=archs, moments=moments,
                          remedy="pass --overwrite to recompute them into this --stats file, or name another"), path
    want_archs, want_moments = archs, moments
    if exists:
        have = load_stats(path, pool, remedy="pass --overwrite to recompute them, or use a new --scores_dir")
        same = have.sampling() == _asked(have, seed, num_samples, sample_ratio)
        if same and set(archs) <= set(have.archs) and (not moments or all(have.has_moments(a) for a in archs)):
            log.debug("using statistics %s", path)
            return have, path
        if same:  # extend the managed file rather than lose what it holds
            want_archs = sorted(set(have.archs) | set(archs))
            want_moments = moments or all(have.has_moments(a) for a in have.archs)
    from kl_filter.engines.devices import local_devices

    stats = compute_stats(pool, archs=want_archs, sample_ratio=sample_ratio, num_samples=num_samples, seed=seed,
                          num_workers=num_workers, progress=progress, parts_dir=parts_dir_for(path) if path else None,
                          reuse_parts=not overwrite, moments=want_moments, device=local_devices(device, 1)[0],
                          engine=engine)
    if path:
        save_stats(path, stats)
    return stats, path


def _exists(path: str) -> bool:
    fs, p = url_to_fs(path)
    return fs.exists(p)
