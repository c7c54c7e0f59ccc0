"""The bridge to DataComp's harness: exact commands (dry run) and DataComp's aggregation of the 38 tasks."""

import json
import os
import sys

import numpy as np
import pytest

from conftest import run_cli
from kl_filter.errors import KLFilterError
from kl_filter.harness.datacomp import GROUPS, build_commands, summarize_eval_results

# flags defined by DataComp's scripts (resharder.py make_argparser, train.py and evaluate.py argparse)
RESHARDER_FLAGS = {"-i", "-o", "-s"}
TRAIN_FLAGS = {"--scale", "--data_dir", "--output_dir", "--exp_name", "--seed"}
EVALUATE_FLAGS = {"--train_output_dir", "--data_dir"}


@pytest.mark.parametrize("scale", ["small", "medium", "large", "xlarge"])
def test_commands_per_scale(scale):
    cmds = build_commands("/dc", scale, "/u/kl.npy", "/pool/shards", "/w", num_gpus=8, seed=3)
    assert [c["step"] for c in cmds] == ["reshard", "train", "evaluate"]
    assert cmds[0]["argv"] == [sys.executable, "resharder.py", "-i", "/pool/shards", "-o", "/w/shards", "-s", "/u/kl.npy"]
    assert cmds[1]["argv"] == ["torchrun", "--nproc_per_node", "8", "train.py", "--scale", scale, "--data_dir",
                               "/w/shards", "--output_dir", "/w/train", "--exp_name", f"kl_{scale}", "--seed", "3"]
    assert cmds[2]["argv"] == [sys.executable, "evaluate.py", "--train_output_dir", f"/w/train/kl_{scale}"]
    for c, allowed in zip(cmds, (RESHARDER_FLAGS, TRAIN_FLAGS, EVALUATE_FLAGS)):
        flags = {a for a in c["argv"] if a.startswith("-") and a != "--nproc_per_node"}
        assert flags <= allowed  # never a flag DataComp's scripts (or open_clip behind them) would reject


def test_dry_run_without_checkout(tmp_path):
    p = run_cli("harness", "--datacomp_dir", tmp_path / "nope", "--scale", "small", "--uids", "u.npy",
                "--shards_dir", "in", "--work_dir", tmp_path / "w", "--dry_run")
    assert p.returncode == 0
    assert "does not look like a DataComp checkout" in p.stderr
    lines = p.stdout.strip().splitlines()
    # every path absolute: DataComp's scripts run inside the checkout, where relative paths would not resolve
    assert len(lines) == 3 and f"resharder.py -i {os.path.abspath('in')} -o {tmp_path / 'w' / 'shards'}" in lines[0]
    assert "train.py --scale small" in lines[1]


def test_bad_inputs(tmp_path):
    p = run_cli("harness", "--datacomp_dir", tmp_path, "--scale", "huge", "--uids", "u", "--shards_dir", "i",
                "--work_dir", "w")
    assert p.returncode == 2 and "invalid choice" in p.stderr
    (tmp_path / "train.py").write_text("")
    p = run_cli("harness", "--datacomp_dir", tmp_path, "--scale", "small", "--uids", tmp_path / "missing.npy",
                "--shards_dir", "i", "--work_dir", tmp_path / "w")
    assert p.returncode == 2 and "missing.npy: no such UID file" in p.stderr


def test_aggregation_is_datacomps(tmp_path):
    tasks = ["ImageNet 1k"] + [t for g in GROUPS.values() for t in g]
    extra = ["CIFAR-10", "Country211", "FGVC Aircraft", "Food-101", "GTSRB", "MNIST", "Pascal VOC 2007",
             "Rendered SST2", "Stanford Cars", "STL-10", "iWildCam", "Camelyon17", "FMoW", "Dollar Street",
             "GeoDE"]
    tasks += extra
    assert len(tasks) == 38
    rng = np.random.default_rng(0)
    vals = dict(zip(tasks, rng.random(38).round(4)))
    path = tmp_path / "eval_results.jsonl"
    with open(path, "w") as f:
        for t, v in vals.items():
            f.write(json.dumps({"key": t.lower(), "dataset": t, "metrics": {"main_metric": v}}) + "\n")
        f.write(json.dumps({"key": "extra", "dataset": "Not a task", "metrics": {"main_metric": None}}) + "\n")
    s = summarize_eval_results(str(path))
    assert s["ImageNet"] == vals["ImageNet 1k"]
    assert s["VTAB"] == pytest.approx(np.mean([vals[t] for t in GROUPS["VTAB"]]))
    assert s["ImageNet dist. shifts"] == pytest.approx(np.mean([vals[t] for t in GROUPS["ImageNet dist. shifts"]]))
    assert s["Retrieval"] == pytest.approx(np.mean([vals["Flickr"], vals["MSCOCO"], vals["WinoGAViL"]]))
    assert s["Average"] == pytest.approx(np.mean(list(vals.values())))
    lines = path.read_text().splitlines()[:30]
    path.write_text("\n".join(lines))
    with pytest.raises(KLFilterError, match="expected the 38 DataComp tasks, found 30"):
        summarize_eval_results(str(path))
