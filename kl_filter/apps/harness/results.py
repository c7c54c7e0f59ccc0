"""DataComp's aggregation of the evaluation results: ImageNet, the task groups and the average of the 38 tasks."""

from __future__ import annotations

import json

from kl_filter.core.errors import KLFilterError

GROUPS = {
    "ImageNet dist. shifts": ["ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R", "ObjectNet"],
    "VTAB": ["Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures", "EuroSAT",
             "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet", "PatchCamelyon", "RESISC45", "SVHN",
             "SUN397"],
    "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
}


def summarize_eval_results(path: str) -> dict:
    """DataComp's aggregation of an ``eval_results.jsonl`` (one line per task, ``metrics.main_metric``)."""
    import numpy as np

    results = {}
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    metric = (row.get("metrics") or {}).get("main_metric")
                    if metric is not None and not (isinstance(metric, float) and np.isnan(metric)):
                        results[row["dataset"]] = float(metric)
    except FileNotFoundError as e:
        raise KLFilterError("no evaluation results", path) from e
    except (ValueError, KeyError) as e:
        raise KLFilterError(f"not an eval_results.jsonl ({e})", path) from e
    if len(results) != 38:
        raise KLFilterError(f"expected the 38 DataComp tasks, found {len(results)}", path)
    missing = [t for t in [*(t for g in GROUPS.values() for t in g), "ImageNet 1k"] if t not in results]
    if missing:
        raise KLFilterError(f"tasks missing: {missing[:3]}", path)
    out = {"ImageNet": results["ImageNet 1k"]}
    out.update({g: float(np.mean([results[t] for t in tasks])) for g, tasks in GROUPS.items()})
    out["Average"] = float(np.mean(list(results.values())))
    return out
