"""DataComp's own harness, run for one UID file: resharder.py, train.py, evaluate.py, and the submission (SPEC §7).

The scripts of a DataComp checkout run unedited, from inside the checkout, with the interpreter ``--python``
(DataComp's environment; default: the one running kl-filter):

1. ``PYTHON resharder.py -i SHARDS -o WORK/shards -s UIDS -j NUM_WORKERS``
2. ``PYTHON -m torch.distributed.run --standalone --nproc_per_node G train.py --scale S --data_dir WORK/shards
   --output_dir WORK/train --exp_name NAME --seed SEED`` (torchrun, from the interpreter in use; ``--standalone``:
   one node on a free port, so two runs on one machine do not collide). The per-scale model, batch size, lr,
   warmup and samples seen come from DataComp's ``scale_configs.py``; nothing of them is passed here.
3. ``PYTHON evaluate.py --train_output_dir WORK/train/NAME --data_dir EVAL_DATA`` (the evaluation sets downloaded
   beforehand with DataComp's ``download_evalsets.py``; ``--skip_eval`` stops after training), then DataComp's
   aggregation of ``eval_results.jsonl`` (:func:`summarize_eval_results`) into ``WORK/results.{md,json}``.
4. With ``submit``: step 3 becomes DataComp's submission, ``evaluate.py --track filtering --train_output_dir ...
   --samples UIDS --dataset-size N --submit --method_name ... --author ... --email ... --hf_username ...
   --hf_repo_name ...``, N the UID file's entries as its sidecar counts them. Only the UID file is handed over
   (``--samples``), never its sidecar, which records local paths and the command line.

Scales: DataComp's five (``debug`` to ``xlarge``) and kl-filter's ``tiny``, a CPU smoke scale (the tiny track's
student, batch 32, 320 samples seen, fp32, in-process data loading) registered by the wrapper
``dcshim/kl_datacomp_run.py`` before it runs ``train.py`` unedited: DataComp is never edited.

Before any work, and before anything is written: the flags, the inputs (the UID file is a valid subset file, the
shards directory exists, the checkout has the scripts, ``--eval_data_dir`` exists, ``--work_dir`` is not inside an
input) and the interpreter (``dcshim/kl_datacomp_probe.py``: it imports what each requested script imports, and
webdataset has what the resharder reads). A missing module is one line naming it and the pip command.

The dry run prints exactly the commands and environment of a real run. A rerun resumes: a finished reshard of the
same UID file (``meta.json``, and ``sample_ids.npy`` equal to the UID file) is kept, an interrupted one removed
first (the resharder refuses a non-empty directory); a finished training (``info.pkl``) is kept, an interrupted
one resumes from its latest checkpoint (``train.py --resume latest``, its default); evaluate.py skips the tasks
already in ``eval_results.jsonl``. Each script runs in its own session (process group): SIGINT or SIGTERM to the
harness is forwarded to the whole group (torchrun, its workers, their data loaders), which is waited for.

open_clip ≥ 2.26 ships its trainer as ``open_clip_train``; DataComp's ``train.py`` imports ``training.main`` and
``training.distributed``. Where the interpreter has only ``open_clip_train``, the ``training`` shim of ``dcshim/``
is put on ``PYTHONPATH`` (printed in the dry run). No optional flag reaches open_clip: ``--blur_field`` in
particular would reach open_clip as ``--blur-field``, which open_clip 3.x rejects.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from kl_filter.core.atomic import write_bytes, write_json
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import is_url

log = logging.getLogger(__name__)
SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dcshim")
WRAPPER = os.path.join(SHIM_DIR, "kl_datacomp_run.py")
PROBE = os.path.join(SHIM_DIR, "kl_datacomp_probe.py")
DATACOMP_SCALES = ("debug", "small", "medium", "large", "xlarge")


def _kl_scales() -> dict:
    with open(os.path.join(SHIM_DIR, "kl_scales.json")) as f:
        return json.load(f)["scales"]


KL_SCALES = _kl_scales()  # scales DataComp does not have, registered by the wrapper (tiny)
SCALES = DATACOMP_SCALES + tuple(KL_SCALES)
# train.py flags for kl-filter's CPU scale: fp32 (train.py's default amp is float16 autocast, for GPUs) and data
# loaded in the training process (--workers 0: no loader process started per epoch on a 2-core machine)
KL_SCALE_TRAIN_FLAGS = {"tiny": ["--precision", "fp32", "--workers", "0"]}
# and one BLAS/OpenMP thread: a step of a model this small took 2-6 s with 2 threads on a loaded 2-core machine,
# 0.33 s with one (threads spinning for cores they do not get)
KL_SCALE_TRAIN_ENV = {"tiny": {"OMP_NUM_THREADS": "1"}}
SCRIPTS = {"reshard": "resharder.py", "train": "train.py", "evaluate": "evaluate.py", "submit": "evaluate.py"}

# what DataComp's scripts import (resharder.py, train.py with open_clip's trainer, evaluate.py with eval_utils),
# as pip requirements: the `datacomp` extra of pyproject.toml lists the same (tests/test_harness.py checks)
PIP = {
    "cv2": "opencv-python-headless>=4.6",
    "simdjson": "pysimdjson>=5",
    "img2dataset": "img2dataset>=1.40",
    "cloudpathlib": "cloudpathlib>=0.13",
    # resharder.py reads webdataset.writer.gopen.Pipe, gone from 0.2.86; open_clip_train's loader takes >= 0.2.48
    "webdataset": "webdataset>=0.2.48,<0.2.86",
    "numpy": "numpy>=1.24",
    "pyarrow": "pyarrow>=14",
    "tqdm": "tqdm>=4.60",
    "torch": "torch>=2.4",
    "torchvision": "torchvision",
    "open_clip": "open_clip_torch>=2.26",
    "open_clip_train": "open_clip_torch>=2.26",
    "training": "open_clip_torch>=2.26",
    "pandas": "pandas>=1.5",
    "braceexpand": "braceexpand",
    "PIL": "pillow>=9",
    "requests": "requests",
    "yaml": "pyyaml>=6",
    # evaluate.py imports huggingface_hub.Repository, removed in huggingface_hub 1.0
    "huggingface_hub": "huggingface_hub<1",
    "clip_benchmark": "clip-benchmark>=1.4",
    "sklearn": "scikit-learn",
    "wilds": "wilds>=2.0",
    "datasets": "datasets>=2.8",
}
GROUPS = {
    "ImageNet dist. shifts": ["ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R", "ObjectNet"],
    "VTAB": ["Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures", "EuroSAT",
             "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet", "PatchCamelyon", "RESISC45", "SVHN",
             "SUN397"],
    "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
}
SUBMIT_REQUIRED = ("method_name", "author", "email", "hf_username", "hf_repo_name")  # evaluate.py asserts these
_RESHARDER_FILES = re.compile(r"\d{8}\.tar|\d{8}_stats\.json|sample_ids\.npy|meta\.json")


@dataclasses.dataclass
class Submission:
    """What DataComp's ``evaluate.py --submit`` asks for (its flags of the same names)."""

    method_name: str | None = None
    author: str | None = None
    email: str | None = None
    hf_username: str | None = None
    hf_repo_name: str | None = None
    writeup: str | None = None
    upload_checkpoint: bool = False


@dataclasses.dataclass
class Step:
    name: str
    argv: list
    env: dict           # set on top of the caller's environment (printed by the dry run)
    note: str = ""      # why a step is skipped, or what the harness does first
    skip: bool = False


def absolute(path: str | None) -> str | None:
    """``path`` as DataComp's scripts must see it from inside their checkout: absolute (``~`` expanded), or a URL
    unchanged."""
    if path is None or is_url(path):
        return path
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def default_exp_name(uids: str, scale: str) -> str:
    return f"{os.path.splitext(os.path.basename(uids))[0]}_{scale}"


def check_flags(scale: str, num_gpus: int, num_workers: int, eval_data_dir: str | None, skip_eval: bool,
                submission: Submission | None, work_dir: str) -> None:
    """Flag combinations, before anything is read."""
    if scale not in SCALES:
        raise KLFilterError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if num_gpus < 1:
        raise KLFilterError(f"--num_gpus must be >= 1, got {num_gpus}")
    if num_workers < 1:
        raise KLFilterError(f"--num_workers must be >= 1, got {num_workers}")
    if is_url(work_dir):
        raise KLFilterError("--work_dir must be a local directory (the harness creates it and reads the training "
                            "output there)", work_dir)
    if submission is not None:
        if scale in KL_SCALES:
            raise KLFilterError(f"--submit: {scale!r} is kl-filter's smoke scale, not a DataComp scale: nothing to "
                                "submit")
        if skip_eval:
            raise KLFilterError("--submit runs DataComp's evaluation (evaluate.py --submit): drop --skip_eval")
    if not skip_eval and not eval_data_dir:
        raise KLFilterError("evaluation needs DataComp's evaluation sets on disk: run `python download_evalsets.py "
                            "DIR` in the DataComp checkout, then pass --eval_data_dir DIR (or --skip_eval to reshard "
                            "and train only)")
    if submission is not None:
        missing = [f"--{k}" for k in SUBMIT_REQUIRED if not getattr(submission, k)]
        if missing:
            raise KLFilterError(f"--submit needs {', '.join(missing)} (evaluate.py refuses a submission without "
                                "them)")


def check_inputs(datacomp_dir: str, uids: str, shards_dir: str, work_dir: str, eval_data_dir: str | None,
                 scripts=("resharder.py", "train.py", "evaluate.py")) -> dict:
    """Everything DataComp's steps read, checked before the first one starts (a full training must not end in
    "no evaluation results" because of a path), and the work directory against the inputs. Returns
    check-uids' counts of the UID file."""
    from kl_filter.core.fspath import url_to_fs
    from kl_filter.core.outputs import In, Out, check
    from kl_filter.core.uids import check_uid_array, load_uids

    fs, p = url_to_fs(uids)
    if not fs.exists(p):
        raise KLFilterError("no such UID file", uids)
    info = check_uid_array(load_uids(uids), uids)  # dtype u8,u8, sorted: what DataComp's resharder needs
    fs, p = url_to_fs(shards_dir)
    if not fs.isdir(p):
        raise KLFilterError("shards directory does not exist", shards_dir)
    for script in scripts:
        if not os.path.isfile(os.path.join(datacomp_dir, script)):
            raise KLFilterError(f"not a DataComp checkout (no {script})", datacomp_dir)
    if eval_data_dir and not url_to_fs(eval_data_dir)[0].isdir(url_to_fs(eval_data_dir)[1]):
        raise KLFilterError("evaluation data directory does not exist", eval_data_dir)
    check([Out(work_dir, "--work_dir", "dir")],
          [In(datacomp_dir, "--datacomp_dir"), In(uids, "--uids"), In(shards_dir, "--shards_dir"),
           In(eval_data_dir, "--eval_data_dir")])
    return info


def dataset_size(uids: str, rows: int | None = None) -> tuple[int, str]:
    """``(N, source)``: the UID file's entries (a resampled uid once per draw) for ``evaluate.py --dataset-size``,
    as its sidecar counts them (``kept``), checked against the file (``rows``, its entries when already counted)
    as ``check-uids`` does."""
    from kl_filter.core.uids import check_sidecar, load_uids, sidecar_path

    rows = int(len(load_uids(uids))) if rows is None else rows
    side, verified = check_sidecar(uids)  # a sidecar must belong to this very file (its sha256)
    if side is None:
        return rows, "the UID file's entries (no sidecar)"
    counted = side.get("kept", (side.get("uids_file") or {}).get("rows"))
    if counted is not None and int(counted) != rows:
        raise KLFilterError(f"the sidecar counts {int(counted):,} uids, the file holds {rows:,}", sidecar_path(uids))
    return rows, ("the sidecar's count (kept)" if verified else
                  "the UID file's entries (sidecar not verified: written before sidecars named their UID file)")


# ---- the interpreter ----------------------------------------------------------------------------------------
def probe(python: str, datacomp_dir: str, scripts: list[str], quick: bool = False, timeout: float = 600) -> dict:
    """What ``python`` lacks to run ``scripts`` of the checkout (:mod:`dcshim.kl_datacomp_probe`); ``quick``:
    modules looked up, not imported (the dry run: seconds, where importing torch and img2dataset takes ~10 s)."""
    env = {**os.environ, **_quiet_env()}
    try:
        p = subprocess.run([python, "-B", PROBE, *(["--quick"] if quick else []), datacomp_dir, *scripts],
                           cwd=datacomp_dir, env=env,
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise KLFilterError("no such interpreter", python) from e
    except PermissionError as e:
        raise KLFilterError("not an executable interpreter", python) from e
    except subprocess.TimeoutExpired as e:
        raise KLFilterError(f"importing DataComp's dependencies took over {timeout:.0f} s", python) from e
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise KLFilterError(f"could not check the interpreter for DataComp's scripts ({tail})", python) from e


def refusal(report: dict, python: str) -> str | None:
    """One line naming what ``python`` lacks and the pip command that installs it, or None when nothing."""
    missing, broken = set(), []
    scripts = []
    for script, r in report["scripts"].items():
        if r["missing"] or r["broken"]:
            scripts.append(script)
        missing.update(r["missing"])
        for b in r["broken"]:
            top = b["module"].split(".")[0]
            v = report.get("versions", {}).get(top)
            what = f"{top} {v}" if v else top
            item = f"{what}: {b['error']} ({b['where']})"
            if item not in broken:
                broken.append(item)
    if not scripts:
        return None
    reqs = sorted({PIP.get(m, m) for m in missing} | {PIP.get(b.split()[0].rstrip(":"), b.split()[0].rstrip(":"))
                                                       for b in broken})
    parts = []
    if missing:
        parts.append(f"no module {', '.join(sorted(missing))}")
    parts += broken
    return (f"{python} cannot run DataComp's {', '.join(scripts)}: {'; '.join(parts)}; install: "
            f"{shlex.quote(python)} -m pip install {' '.join(shlex.quote(r) for r in reqs)} "
            "(or pip install 'kl-filter[datacomp]' there)")


def _refuse(problem: str | None) -> None:
    if problem:
        raise KLFilterError(problem)


def _quiet_env() -> dict:
    # albumentations (imported by the resharder through img2dataset) asks PyPI for a newer version at every import
    return {"NO_ALBUMENTATIONS_UPDATE": "1"}


# ---- the plan -------------------------------------------------------------------------------------------------
def build_steps(datacomp_dir: str, scale: str, uids: str, shards_dir: str, work_dir: str, num_gpus: int = 1,
                exp_name: str | None = None, seed: int = 0, eval_data_dir: str | None = None,
                skip_eval: bool = False, python: str | None = None, num_workers: int = 1,
                trainer: str = "open_clip_train", submission: Submission | None = None,
                dataset_size: int | None = None) -> list[Step]:
    """The commands, every path absolute (they run with the DataComp checkout as working directory), with the
    environment variables each sets."""
    python = python or sys.executable
    uids, shards_dir, work_dir, eval_data_dir = map(absolute, (uids, shards_dir, work_dir, eval_data_dir))
    exp_name = exp_name or default_exp_name(uids, scale)
    shards_out, train_out = os.path.join(work_dir, "shards"), os.path.join(work_dir, "train")
    wrap = [WRAPPER] if scale in KL_SCALES else []  # registers kl-filter's scale, then runs DataComp's script
    quiet = _quiet_env()
    steps = [Step("reshard", [python, "resharder.py", "-i", shards_dir, "-o", shards_out, "-s", uids,
                              "-j", str(num_workers)], dict(quiet))]
    train_env = {**quiet, **KL_SCALE_TRAIN_ENV.get(scale, {})}
    if trainer == "open_clip_train":
        old = os.environ.get("PYTHONPATH", "")
        train_env["PYTHONPATH"] = SHIM_DIR + (os.pathsep + old if old else "")
    steps.append(Step("train", [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                str(num_gpus), *wrap, "train.py", "--scale", scale, "--data_dir", shards_out,
                                "--output_dir", train_out, "--exp_name", exp_name, "--seed", str(seed),
                                *KL_SCALE_TRAIN_FLAGS.get(scale, [])], train_env))
    if skip_eval:
        return steps
    evaluate = [python, *wrap, "evaluate.py"]
    if submission is None:
        evaluate += ["--train_output_dir", os.path.join(train_out, exp_name)]
        if eval_data_dir:
            evaluate += ["--data_dir", eval_data_dir]
        steps.append(Step("evaluate", evaluate, dict(quiet)))
        return steps
    # DataComp's README order: --track --train_output_dir --samples --dataset-size --submit --method_name ...
    evaluate += ["--track", "filtering", "--train_output_dir", os.path.join(train_out, exp_name)]
    if eval_data_dir:
        evaluate += ["--data_dir", eval_data_dir]
    evaluate += ["--samples", uids, "--dataset-size", "N" if dataset_size is None else str(dataset_size), "--submit"]
    for k in (*SUBMIT_REQUIRED, "writeup"):
        if getattr(submission, k):
            evaluate += [f"--{k}", getattr(submission, k)]
    if submission.upload_checkpoint:
        evaluate.append("--upload_checkpoint")
    steps.append(Step("submit", evaluate, dict(quiet)))
    return steps


def _train_dir(steps: list[Step]) -> str:
    t = next(s for s in steps if s.name == "train").argv
    return os.path.join(t[t.index("--output_dir") + 1], t[t.index("--exp_name") + 1])


def plan_resume(steps: list[Step], uids: str) -> None:
    """Mark what an earlier run finished as skipped, and note what an interrupted one left (see the module doc)."""
    reshard = steps[0]
    out = reshard.argv[reshard.argv.index("-o") + 1]
    names = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if "meta.json" in names:
        if not _same_bytes(os.path.join(out, "sample_ids.npy"), uids):
            raise KLFilterError("holds the reshard of another UID file (its sample_ids.npy is not --uids): choose "
                                "another --work_dir", out)
        reshard.skip, reshard.note = True, f"done earlier ({os.path.join(out, 'meta.json')} of this UID file)"
    elif names:
        foreign = [n for n in names if not _RESHARDER_FILES.fullmatch(n)]
        if foreign:
            raise KLFilterError(f"holds files the resharder did not write ({foreign[0]}): DataComp's resharder "
                                "refuses a non-empty directory; choose another --work_dir", out)
        reshard.note = f"an interrupted reshard left {len(names)} files in {out}: removed first"
    train = next(s for s in steps if s.name == "train")
    run_dir = _train_dir(steps)
    if os.path.isfile(os.path.join(run_dir, "info.pkl")):
        train.skip, train.note = True, f"done earlier ({os.path.join(run_dir, 'info.pkl')})"
    elif os.path.isfile(os.path.join(run_dir, "checkpoints", "epoch_latest.pt")):
        train.note = (f"resumes from {os.path.join(run_dir, 'checkpoints', 'epoch_latest.pt')} "
                      "(train.py --resume latest, its default)")


def _same_bytes(a: str, b: str, block: int = 1 << 24) -> bool:
    """Do files ``a`` and ``b`` (paths or fsspec URLs) hold the same bytes? Read in blocks: a UID file of the
    xlarge pool is 20 GB. An unreadable file is not the same."""
    from kl_filter.core.fspath import open_file

    try:
        with open_file(a, "rb") as fa, open_file(b, "rb") as fb:
            while True:
                x, y = fa.read(block), fb.read(block)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def command_line(step: Step, cwd: str) -> str:
    """The shell line that does what the harness runs: ``cd CWD && VAR=value ... ARGV``."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env.items())
    return f"cd {shlex.quote(cwd)} && {env + ' ' if env else ''}{shlex.join(step.argv)}"


# ---- running --------------------------------------------------------------------------------------------------
class Stopped(Exception):
    """The harness was sent SIGINT or SIGTERM; the step's whole process group has been stopped."""

    def __init__(self, signum: int, step: str):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} during DataComp's {step} step (its processes "
                         "were stopped); rerun the same command to resume")


def run_step(step: Step, cwd: str, grace_s: float = 30.0) -> int:
    """Run one step in its own session (process group); SIGINT/SIGTERM are forwarded to the whole group, which is
    waited for (SIGKILL after ``grace_s``). Returns the exit status, or raises :class:`Stopped`."""
    env = {**os.environ, **step.env}
    got: list[tuple[int, float]] = []  # (signal, when)
    procs: list = []

    def forward(signum, _frame):
        got.append((signum, time.monotonic()))
        if procs:
            _killpg(procs[0].pid, signum)

    # handlers first: a signal that arrives while the step starts is forwarded as soon as it has started
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(step.argv, cwd=cwd, env=env, start_new_session=True)
        procs.append(proc)
        if got:
            _killpg(proc.pid, got[0][0])
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if got and time.monotonic() - got[0][1] > grace_s:
                    _killpg(proc.pid, signal.SIGKILL)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        # the leader is gone; whatever of its group is left (data loader workers, resharder workers) goes too
        _killpg(proc.pid, signal.SIGKILL)
        raise Stopped(got[0][0], step.name)
    return rc


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


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
    missing = [t for g in GROUPS.values() for t in g if t not in results] + [t for t in ["ImageNet 1k"] if t not in results]
    if missing:
        raise KLFilterError(f"tasks missing: {missing[:3]}", path)
    out = {"ImageNet": results["ImageNet 1k"]}
    out.update({g: float(np.mean([results[t] for t in tasks])) for g, tasks in GROUPS.items()})
    out["Average"] = float(np.mean(list(results.values())))
    return out


def run_harness(datacomp_dir: str, scale: str, uids: str, shards_dir: str, work_dir: str, num_gpus: int = 1,
                exp_name: str | None = None, seed: int = 0, eval_data_dir: str | None = None,
                skip_eval: bool = False, python: str | None = None, num_workers: int = 1,
                submission: Submission | None = None, yes: bool = False, dry_run: bool = False,
                echo=None) -> dict | None:
    """Check everything, then run (or, dry, print) the steps; returns DataComp's aggregated results, or None
    when nothing was evaluated. A submission without ``yes`` is a dry run."""
    # flushed: each line must come before the output of the step it announces
    echo = echo or (lambda line: print(line, flush=True))
    python = python or sys.executable
    datacomp_dir, uids, shards_dir, work_dir, eval_data_dir = map(
        absolute, (datacomp_dir, uids, shards_dir, work_dir, eval_data_dir))
    check_flags(scale, num_gpus, num_workers, eval_data_dir, skip_eval, submission, work_dir)
    dry = dry_run or (submission is not None and not yes)
    names = ["reshard", "train"] + ([] if skip_eval else ["submit" if submission else "evaluate"])
    scripts = sorted({SCRIPTS[n] for n in names}, key=list(SCRIPTS.values()).index)
    have = os.path.isdir(datacomp_dir) and all(os.path.isfile(os.path.join(datacomp_dir, s)) for s in scripts)
    trainer, size = "open_clip_train", None

    def attempt(check):
        """A real run stops at the first problem; a dry run warns and prints the commands all the same."""
        try:
            return check()
        except KLFilterError as e:
            if not dry:
                raise
            log.warning("a real run would stop here: %s", e)
            return None

    if dry and not have:
        log.warning("%s does not look like a DataComp checkout (no %s); printing the commands anyway",
                    datacomp_dir, " or ".join(scripts))
    info = attempt(lambda: check_inputs(datacomp_dir, uids, shards_dir, work_dir, eval_data_dir, scripts))
    if submission is not None:
        counted = attempt(lambda: dataset_size(uids, info["rows"] if info else None))
        if counted:
            size = counted[0]
            echo(f"# --dataset-size {size}: {counted[1]}")
    if have:
        report = attempt(lambda: probe(python, datacomp_dir, scripts, quick=dry))
        if report:
            trainer = report["trainer"] if report["trainer"] != "missing" else trainer
            attempt(lambda: _refuse(refusal(report, python)))
    steps = build_steps(datacomp_dir, scale, uids, shards_dir, work_dir, num_gpus, exp_name, seed, eval_data_dir,
                        skip_eval, python, num_workers, trainer, submission, size)
    if os.path.isdir(work_dir):
        attempt(lambda: plan_resume(steps, uids))
    if dry:
        for s in steps:
            if s.note:
                echo(f"# {s.name}: {s.note}")
            if not s.skip:
                echo(command_line(s, datacomp_dir))
        if submission is not None and not yes:
            echo("# a dry run: add --yes to run these; the submission uploads the UID file (--samples, never its "
                 "sidecar), eval_results.jsonl" + (" and the checkpoint" if submission.upload_checkpoint else "")
                 + f" to huggingface.co/{submission.hf_username}/{submission.hf_repo_name} and sends the method "
                 "name, author and scores to DataComp's leaderboard")
        return None
    for d in (work_dir, os.path.join(work_dir, "shards"), os.path.join(work_dir, "train")):
        os.makedirs(d, exist_ok=True)
    for s in steps:
        if s.skip:
            echo(f"harness: {s.name}: {s.note}: skipped")
            continue
        if s.name == "reshard" and s.note:
            out = s.argv[s.argv.index("-o") + 1]
            for n in sorted(os.listdir(out), key=lambda n: n != "meta.json"):
                if _RESHARDER_FILES.fullmatch(n):
                    os.remove(os.path.join(out, n))
        echo(f"harness: {s.name}: {command_line(s, datacomp_dir)}" + (f"  # {s.note}" if s.note else ""))
        t0 = time.perf_counter()
        rc = run_step(s, datacomp_dir)
        echo(f"harness: {s.name}: exit status {rc} after {time.perf_counter() - t0:.1f} s")
        if rc != 0:
            raise KLFilterError(f"DataComp's {s.name} step failed with exit status {rc}", datacomp_dir)
    run_dir = _train_dir(steps)
    if skip_eval:
        echo(f"harness: trained, not evaluated (--skip_eval): {os.path.join(run_dir, 'checkpoints')}, "
             f"{os.path.join(run_dir, 'info.pkl')}")
        return None
    summary = summarize_eval_results(os.path.join(run_dir, "eval_results.jsonl"))
    write_json(os.path.join(work_dir, "results.json"), {"uids": uids, "scale": scale, **summary})
    table = "| " + " | ".join(summary) + " |\n|" + "---|" * len(summary) + "\n| " + \
        " | ".join(f"{v:.4f}" for v in summary.values()) + " |\n"
    write_bytes(os.path.join(work_dir, "results.md"), table.encode())
    return summary
