"""Can an interpreter run DataComp's scripts? :func:`probe` asks it (``dcshim/kl_datacomp_probe.py``), and
:func:`refusal` turns a lack into one line naming the modules and the pip command that installs them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

from kl_filter.core.errors import KLFilterError
from kl_filter.apps.harness.checkout import PROBE, quiet_env

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


def probe(python: str, datacomp_dir: str, scripts: list[str], quick: bool = False, timeout: float = 600) -> dict:
    """What ``python`` lacks to run ``scripts`` of the checkout (:mod:`dcshim.kl_datacomp_probe`); ``quick``:
    modules looked up, not imported (the dry run: seconds, where importing torch and img2dataset takes ~10 s)."""
    env = {**os.environ, **quiet_env()}
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
