"""The harness's plan: DataComp's commands for one UID file (:func:`build_steps`), what an earlier run finished or
left (:func:`plan_resume`), and the shell line of each (:func:`command_line`); see :mod:`.datacomp`."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import is_url
from kl_filter.apps.harness.checkout import (KL_SCALE_TRAIN_ENV, KL_SCALE_TRAIN_FLAGS, KL_SCALES, SHIM_DIR, WRAPPER,
                                            quiet_env)

SUBMIT_REQUIRED = ("method_name", "author", "email", "hf_username", "hf_repo_name")  # evaluate.py asserts these
RESHARDER_FILES = re.compile(r"\d{8}\.tar|\d{8}_stats\.json|sample_ids\.npy|meta\.json")


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
    quiet = quiet_env()
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


def train_dir(steps: list[Step]) -> str:
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
        foreign = [n for n in names if not RESHARDER_FILES.fullmatch(n)]
        if foreign:
            raise KLFilterError(f"holds files the resharder did not write ({foreign[0]}): DataComp's resharder "
                                "refuses a non-empty directory; choose another --work_dir", out)
        reshard.note = f"an interrupted reshard left {len(names)} files in {out}: removed first"
    train = next(s for s in steps if s.name == "train")
    run_dir = train_dir(steps)
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
