"""DataComp's own harness, run for one UID file: resharder.py, train.py, evaluate.py, and the submission
(docs/harness.md).

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

This module checks and runs; the parts: :mod:`.checkout` (the shim directory, the scales, the scripts'
environment), :mod:`.interpreter` (what ``--python`` lacks), :mod:`.steps` (the commands, resuming),
:mod:`.process` (one script in its process group), :mod:`.results` (DataComp's aggregation).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from kl_filter.core.atomic import write_bytes, write_json
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import is_url
from kl_filter.apps.harness.checkout import KL_SCALES, SCALES, SCRIPTS
from kl_filter.apps.harness.interpreter import probe, refusal
from kl_filter.apps.harness.process import run_step
from kl_filter.apps.harness.results import summarize_eval_results
from kl_filter.apps.harness.steps import (RESHARDER_FILES, SUBMIT_REQUIRED, Submission, absolute, build_steps,
                                          command_line, plan_resume, train_dir)

log = logging.getLogger(__name__)


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


def _refuse(problem: str | None) -> None:
    if problem:
        raise KLFilterError(problem)


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
                if RESHARDER_FILES.fullmatch(n):
                    os.remove(os.path.join(out, n))
        echo(f"harness: {s.name}: {command_line(s, datacomp_dir)}" + (f"  # {s.note}" if s.note else ""))
        t0 = time.perf_counter()
        rc = run_step(s, datacomp_dir)
        echo(f"harness: {s.name}: exit status {rc} after {time.perf_counter() - t0:.1f} s")
        if rc != 0:
            raise KLFilterError(f"DataComp's {s.name} step failed with exit status {rc}", datacomp_dir)
    run_dir = train_dir(steps)
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
