"""A bridge to DataComp's own train-and-evaluate harness for one UID file (SPEC §7).

It builds the exact commands of DataComp's README and runs them from a DataComp checkout:

1. ``python resharder.py -i SHARDS -o WORK/shards -s UIDS``
2. ``torchrun --nproc_per_node G train.py --scale S --data_dir WORK/shards --output_dir WORK/train
   --exp_name NAME --seed SEED`` (per-scale model, batch size, lr, warmup and samples seen come from DataComp's
   ``scale_configs.py``, so nothing of them is passed here)
3. ``python evaluate.py --train_output_dir WORK/train/NAME [--data_dir EVAL_DATA]``

then reads ``WORK/train/NAME/eval_results.jsonl`` into our results table, aggregated as DataComp's
``aggregate_scores.py`` does: ImageNet, the mean of the 6 ImageNet distribution shifts, of the 13 VTAB tasks,
of the 3 retrieval tasks, and the mean of all 38 main metrics.

open_clip ≥ 2.26 ships its trainer as ``open_clip_train``; DataComp's ``train.py`` imports ``training.main``
and ``training.distributed``. When only ``open_clip_train`` is installed, the bridge puts a two-module shim
package named ``training`` (re-exporting ``open_clip_train``) on ``PYTHONPATH``. No optional flag is
forwarded: ``--blur_field`` in particular would reach open_clip as ``--blur-field``, which open_clip 3.x rejects.

DataComp's scripts run inside the checkout (``cwd``), so every path handed to them is made absolute first (a
relative ``--work_dir runs/x`` would otherwise land inside the checkout, and the results be looked for elsewhere);
URLs (``s3://...``) are passed as they are. Before the first step, the inputs are checked: the UID file is a valid
subset file, the shards directory exists, the checkout has the three scripts, ``--eval_data_dir`` exists, and
the work directory is not inside an input (:mod:`kl_filter.outputs`). A dry run prints the same absolute commands
and only warns about missing inputs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import subprocess
import sys

import numpy as np

from ..atomic import write_bytes, write_json
from ..errors import KLFilterError
from ..fspath import is_url

log = logging.getLogger(__name__)
SCALES = ("small", "medium", "large", "xlarge")
GROUPS = {
    "ImageNet dist. shifts": ["ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R", "ObjectNet"],
    "VTAB": ["Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures", "EuroSAT",
             "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet", "PatchCamelyon", "RESISC45", "SVHN",
             "SUN397"],
    "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
}


def trainer_flavour() -> str:
    """"training" (open_clip < 2.26, what DataComp imports), "open_clip_train" (≥ 2.26), or "missing"."""
    if importlib.util.find_spec("training") is not None:
        return "training"
    if importlib.util.find_spec("open_clip_train") is not None:
        return "open_clip_train"
    return "missing"


def write_shim(work_dir: str) -> str:
    """A ``training`` package that forwards to ``open_clip_train`` (what DataComp's train.py imports)."""
    root = os.path.join(work_dir, "_open_clip_shim")
    for name, body in {"__init__.py": "", "main.py": "from open_clip_train.main import *  # noqa\nfrom open_clip_train.main import main  # noqa\n",
                       "distributed.py": "from open_clip_train.distributed import *  # noqa\n"}.items():
        write_bytes(os.path.join(root, "training", name), body.encode())
    return root


def absolute(path: str | None) -> str | None:
    """``path`` as DataComp's scripts must see it from inside their checkout: absolute (``~`` expanded), or a URL
    unchanged."""
    if path is None or is_url(path):
        return path
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def build_commands(datacomp_dir: str, scale: str, uids: str, shards_dir: str, work_dir: str, num_gpus: int = 1,
                   exp_name: str | None = None, seed: int = 0, eval_data_dir: str | None = None) -> list[dict]:
    """The three commands, every path absolute (they run with the DataComp checkout as working directory)."""
    uids, shards_dir, work_dir, eval_data_dir = map(absolute, (uids, shards_dir, work_dir, eval_data_dir))
    if scale not in SCALES:
        raise KLFilterError(f"--scale must be one of {SCALES}, got {scale!r}")
    if num_gpus < 1:
        raise KLFilterError(f"--num_gpus must be >= 1, got {num_gpus}")
    exp_name = exp_name or f"{os.path.splitext(os.path.basename(uids))[0]}_{scale}"
    shards_out, train_out = os.path.join(work_dir, "shards"), os.path.join(work_dir, "train")
    evaluate = [sys.executable, "evaluate.py", "--train_output_dir", os.path.join(train_out, exp_name)]
    if eval_data_dir:
        evaluate += ["--data_dir", eval_data_dir]
    return [
        {"step": "reshard", "argv": [sys.executable, "resharder.py", "-i", shards_dir, "-o", shards_out, "-s", uids]},
        {"step": "train", "argv": ["torchrun", "--nproc_per_node", str(num_gpus), "train.py", "--scale", scale,
                                   "--data_dir", shards_out, "--output_dir", train_out, "--exp_name", exp_name,
                                   "--seed", str(seed)]},
        {"step": "evaluate", "argv": evaluate},
    ]


def check_inputs(datacomp_dir: str, uids: str, shards_dir: str, work_dir: str, eval_data_dir: str | None) -> None:
    """Everything DataComp's three steps read, checked before the first one starts (a full training must not
    end in "no evaluation results" because of a path), and the work directory against the inputs."""
    from ..fspath import url_to_fs
    from ..outputs import In, Out, check
    from ..uids import check_uid_array, load_uids

    fs, p = url_to_fs(uids)
    if not fs.exists(p):
        raise KLFilterError("no such UID file", uids)
    check_uid_array(load_uids(uids), uids)  # dtype u8,u8, sorted: what DataComp's resharder needs
    fs, p = url_to_fs(shards_dir)
    if not fs.isdir(p):
        raise KLFilterError("shards directory does not exist", shards_dir)
    for script in ("resharder.py", "train.py", "evaluate.py"):
        if not os.path.isfile(os.path.join(datacomp_dir, script)):
            raise KLFilterError(f"not a DataComp checkout (no {script})", datacomp_dir)
    if eval_data_dir and not url_to_fs(eval_data_dir)[0].isdir(url_to_fs(eval_data_dir)[1]):
        raise KLFilterError("evaluation data directory does not exist", eval_data_dir)
    check([Out(work_dir, "--work_dir", "dir")],
          [In(datacomp_dir, "--datacomp_dir"), In(uids, "--uids"), In(shards_dir, "--shards_dir"),
           In(eval_data_dir, "--eval_data_dir")])


def summarize_eval_results(path: str) -> dict:
    """DataComp's aggregation of an ``eval_results.jsonl`` (one line per task, ``metrics.main_metric``)."""
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
    missing = [t for g in GROUPS.values() for t in g if t not in results] + [t for t in ["ImageNet 1k"] if t not in results]
    if missing:
        raise KLFilterError(f"tasks missing: {missing[:3]}", path)
    out = {"ImageNet": results["ImageNet 1k"]}
    out.update({g: float(np.mean([results[t] for t in tasks])) for g, tasks in GROUPS.items()})
    out["Average"] = float(np.mean(list(results.values())))
    return out


def run_harness(datacomp_dir: str, scale: str, uids: str, shards_dir: str, work_dir: str, num_gpus: int = 1,
                exp_name: str | None = None, seed: int = 0, eval_data_dir: str | None = None,
                dry_run: bool = False, echo=print) -> dict | None:
    datacomp_dir, uids, shards_dir, work_dir, eval_data_dir = map(
        absolute, (datacomp_dir, uids, shards_dir, work_dir, eval_data_dir))
    cmds = build_commands(datacomp_dir, scale, uids, shards_dir, work_dir, num_gpus, exp_name, seed, eval_data_dir)
    have = os.path.exists(os.path.join(datacomp_dir, "train.py"))
    if dry_run:
        if not have:
            log.warning("%s does not look like a DataComp checkout (no train.py); printing the commands anyway",
                        datacomp_dir)
        else:
            try:
                check_inputs(datacomp_dir, uids, shards_dir, work_dir, eval_data_dir)
            except KLFilterError as e:
                log.warning("a real run would stop here: %s", e)
        for c in cmds:
            echo(f"cd {shlex.quote(datacomp_dir)} && {shlex.join(c['argv'])}")
        return None
    if not have:
        raise KLFilterError("not a DataComp checkout (no train.py)", datacomp_dir)
    check_inputs(datacomp_dir, uids, shards_dir, work_dir, eval_data_dir)
    env = dict(os.environ)
    if trainer_flavour() == "open_clip_train":
        env["PYTHONPATH"] = write_shim(work_dir) + os.pathsep + env.get("PYTHONPATH", "")
    for c in cmds:
        echo(f"harness: {c['step']}: {shlex.join(c['argv'])}")
        rc = subprocess.run(c["argv"], cwd=datacomp_dir, env=env).returncode
        if rc != 0:
            raise KLFilterError(f"DataComp's {c['step']} step failed with exit status {rc}", datacomp_dir)
    train_dir = cmds[2]["argv"][cmds[2]["argv"].index("--train_output_dir") + 1]
    summary = summarize_eval_results(os.path.join(train_dir, "eval_results.jsonl"))
    write_json(os.path.join(work_dir, "results.json"), {"uids": uids, "scale": scale, **summary})
    table = "| " + " | ".join(summary) + " |\n|" + "---|" * len(summary) + "\n| " + \
        " | ".join(f"{v:.4f}" for v in summary.values()) + " |\n"
    write_bytes(os.path.join(work_dir, "results.md"), table.encode())
    return summary
