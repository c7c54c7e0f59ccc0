"""The tiny track's worker processes: train, evaluate and checkpoint one model per task, one torch thread each."""

from __future__ import annotations

import logging
import os
import sys

from kl_filter.apps.tiny.models import evaluate, require_torch, save_checkpoint, train_clip
from kl_filter.apps.tiny.shards import load_pairs

# On 2 cores, two single-threaded trainings side by side match one two-threaded training when the machine is idle,
# and degrade gracefully when it is not (multi-threaded OpenMP collapses under oversubscription: measured 10-25x
# slower steps with a competing process). Every task is deterministic given its seed.
_CACHE: dict = {}


class _DropRootInfo(logging.Filter):
    """Drops records logged on the root logger itself (``logging.info(...)``) below ERROR."""

    def filter(self, record):
        return not (record.name == "root" and record.levelno <= logging.WARNING)


def quiet_logs():
    """open_clip logs model creation on the root logger at INFO: keep it out of the track's log.

    Idempotent: one filter on the root logger and one per root handler, however often it is called."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropRootInfo) for f in root.filters):
        root.addFilter(_DropRootInfo())
    for h in root.handlers:
        if not any(isinstance(f, _DropRootInfo) for f in h.filters):
            h.addFilter(_DropRootInfo())


def _worker_init(cfg_dir: str, threads: int = 1) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch, open_clip = require_torch()
    torch.set_num_threads(threads)
    quiet_logs()
    open_clip.add_model_config(cfg_dir)


def _cached(key, fn):
    if key not in _CACHE:
        if len(_CACHE) > 2:
            _CACHE.clear()
        _CACHE[key] = fn()
    return _CACHE[key]


def _load_evals(path: str) -> dict:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


def train_task(spec: dict) -> dict:
    """Train ``spec['model']`` on the tars in ``spec['data_dir']``, evaluate it, optionally save a checkpoint.

    ``spec['weights']`` (optional): a weights file (uid, weight, log_weight; ``kl-filter weights``' format) giving
    every training sample its weight in the loss (:func:`.models.weighted_clip_loss`), mapped by uid:
    ``spec['raw_weights']`` takes exp(log_weight) (the IWL authors' unnormalised exp(a·<x̂, p̂>)) instead of the
    weight normalised to mean 1 over the pool; ``spec['per_batch']`` self-normalises them in each batch."""
    torch, _ = require_torch()
    images, texts, uids = _cached(("pairs", spec["data_dir"]), lambda: load_pairs(spec["data_dir"]))
    evals = _cached(("evals", spec["evals"]), lambda: _load_evals(spec["evals"]))
    weights = None
    if spec.get("weights"):
        from kl_filter.apps.tiny.iwl import sample_weights

        weights = sample_weights(spec["weights"], uids, raw=bool(spec.get("raw_weights")))
    model, info = train_clip(spec["model"], images, texts, spec["samples_seen"], spec["batch_size"], spec["lr"],
                             spec["seed"], spec["warmup_frac"], spec["weight_decay"], spec["beta2"], weights=weights,
                             per_batch=bool(spec.get("per_batch")))
    if weights is not None:
        info["weights"]["file"] = os.path.basename(spec["weights"])
        info["weights"]["raw"] = bool(spec.get("raw_weights"))
    out = {"train": info, "eval": evaluate(model, spec["model"], evals),
           "params": int(sum(p.numel() for p in model.parameters()))}
    if spec.get("checkpoint"):
        save_checkpoint(torch, model, spec["model"], spec["checkpoint"])
    return out


def executor(workers: int, cfg_dir: str):
    """A process pool for :func:`train_task` (forkserver on Linux, else spawn)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
    return cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(cfg_dir,))
