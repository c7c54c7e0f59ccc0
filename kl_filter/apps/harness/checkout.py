"""What kl-filter puts beside a DataComp checkout (:mod:`.datacomp`): the shim directory (``dcshim/``: the wrapper
that registers kl-filter's scales before running DataComp's script unedited, the interpreter probe, the
``training`` shim), the scales, and the flags and environment DataComp's scripts run with."""

from __future__ import annotations

import json
import os

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


def quiet_env() -> dict:
    # albumentations (imported by the resharder through img2dataset) asks PyPI for a newer version at every import
    return {"NO_ALBUMENTATIONS_UPDATE": "1"}
