"""`kl-filter harness` with DataComp's own scripts, unedited (``../shared/peers/datacomp``, commit 4a8df19), on
the tiny track's pool with image tars: DataComp's resharder.py gives the samples `kl-filter reshard` gives, its
train.py trains the CPU scale ``tiny`` for 10 steps, and the submission's dry run prints evaluate.py's flags.

Without the checkout (a user's fresh clone) these tests skip and say why; CI sets KL_FILTER_REQUIRE_PEERS=1
(.ci/run), which makes that skip a failure.
"""

import ast
import importlib.util
import json
import os
import pickle
import shlex
import time

import pytest

from conftest import REPO, run_cli

PEERS = os.path.normpath(os.path.join(REPO, "..", "shared", "peers", "datacomp"))


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("KL_FILTER_REQUIRE_PEERS") == "1":
        pytest.fail(f"{reason} (KL_FILTER_REQUIRE_PEERS=1: this run must run DataComp's scripts)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def peers():
    require(os.path.isfile(os.path.join(PEERS, "resharder.py")),
            f"{PEERS} is absent: DataComp's scripts (unedited, commit 4a8df19) are not beside this checkout")
    for module in ("cv2", "simdjson", "img2dataset", "cloudpathlib", "webdataset", "torch", "open_clip_train"):
        require(importlib.util.find_spec(module) is not None,
                f"{module} is not installed (DataComp's resharder.py / train.py): pip install -e '.[test]'")
    return PEERS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny track's quick pool (300 samples, 3 image tars) and a kl-filter UID file of half of it, one uid
    three times (upsampled), one not in the pool, with its sidecar."""
    import pyarrow.parquet as pq

    from kl_filter.apps.tiny.pool import make_pool
    from kl_filter.core.uids import hex_to_u8u8, save_uids_with_sidecar

    root = tmp_path_factory.mktemp("dc")
    make_pool(str(root / "pool"), 300, seed=0, shard_size=120)
    uids = pq.read_table(root / "pool" / "truth.parquet")["uid"].to_pylist()
    chosen = uids[::2] + [uids[2], uids[2], "f" * 32]
    save_uids_with_sidecar(str(root / "kl.npy"), hex_to_u8u8(chosen), {"name": "test", "kept": len(chosen)})
    return root, len(chosen)


def _samples(d):
    from kl_filter.pool.tars import read_samples

    return [s for f in sorted(os.listdir(d)) if f.endswith(".tar") for s in read_samples(os.path.join(d, f))]


@pytest.mark.slow
def test_harness_runs_datacomps_resharder_and_train_py_on_the_tiny_scale(peers, tiny, tmp_path):
    import torch

    from kl_filter.apps.harness.checkout import KL_SCALES

    root, n = tiny
    work = tmp_path / "W"
    args = ["harness", "--datacomp_dir", peers, "--scale", "tiny", "--uids", root / "kl.npy", "--shards_dir",
            root / "pool", "--work_dir", work, "--skip_eval", "--num_workers", "1"]
    dry = run_cli(*args, "--dry_run")
    assert dry.returncode == 0, dry.stderr
    t0 = time.perf_counter()
    p = run_cli(*args)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ran = [line.split(": ", 2)[2] for line in p.stdout.splitlines() if line.startswith("harness: ") and ": cd " in line]
    assert ran == dry.stdout.strip().splitlines()  # the dry run printed exactly what ran, environment included
    words = shlex.split(ran[1])
    assert words[:3] == ["cd", peers, "&&"] and "-m" in words and "torch.distributed.run" in words
    assert words[words.index("train.py") - 1].endswith("kl_datacomp_run.py")  # DataComp's train.py, unedited

    # DataComp's train.py: 5 checkpoints of 2 steps (open_clip's AdamW counts them), info.pkl for evaluate.py
    run = work / "train" / "kl_tiny"
    ckpt = torch.load(run / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 5 and ckpt["name"] == "kl_tiny"
    steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {10}
    with open(run / "info.pkl", "rb") as f:
        info = pickle.load(f)
    assert info["scale"] == "tiny" and info["scale_config"] == KL_SCALES["tiny"]
    assert str(info["checkpoint"]) == str(run / "checkpoints" / "epoch_latest.pt")
    assert str(info["data_dir"]) == str(work / "shards")

    # DataComp's resharder (-j 1) and kl-filter's reshard: the same samples, keys, order and bytes
    ours = tmp_path / "ours"
    r = run_cli("reshard", "--shards_dir", root / "pool", "--uids", root / "kl.npy", "--out", ours,
                "--num_workers", "1", "--no_progress")
    assert r.returncode == 0, r.stderr
    theirs, mine = _samples(work / "shards"), _samples(ours)
    assert len(theirs) == n - 1  # the uid not in the pool is skipped (DataComp warns)
    assert [k for k, _ in theirs] == [k for k, _ in mine] and sum(k.endswith("-2") for k, _ in mine) == 1
    assert theirs == mine
    meta = json.loads((work / "shards" / "meta.json").read_text())
    assert meta["output_count"] == json.loads((ours / "meta.json").read_text())["output_count"] == n - 1
    assert (work / "shards" / "sample_ids.npy").read_bytes() == (root / "kl.npy").read_bytes()

    # a rerun resumes: both steps are done, neither runs again
    again = run_cli(*args, "--dry_run")
    assert again.returncode == 0 and again.stdout.splitlines() == [
        f"# reshard: done earlier ({work / 'shards' / 'meta.json'} of this UID file)",
        f"# train: done earlier ({run / 'info.pkl'})"], again.stdout
    print(f"harness --scale tiny: {wall:.1f} s wall;", *[x for x in p.stdout.splitlines() if "exit status" in x])


def _evaluate_flags(path):
    """The flags DataComp's evaluate.py defines (its argparse calls, read with ast)."""
    flags = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant)}
    return flags


def test_submission_dry_run_prints_datacomps_flags(peers, tiny, tmp_path):
    root, n = tiny
    (tmp_path / "evalsets").mkdir()
    work = tmp_path / "W"
    p = run_cli("harness", "--datacomp_dir", peers, "--scale", "medium", "--uids", root / "kl.npy", "--shards_dir",
                root / "pool", "--work_dir", work, "--eval_data_dir", tmp_path / "evalsets", "--num_gpus", "8",
                "--submit", "--method_name", "KL (L/14 text, 25%)", "--author", "A. Author", "--email", "a@b.c",
                "--hf_username", "me", "--hf_repo_name", "dc")
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip().splitlines()
    assert out[0] == f"# --dataset-size {n}: the sidecar's count (kept)"
    submit = shlex.split(out[3])
    assert submit[:4] == ["cd", peers, "&&", "NO_ALBUMENTATIONS_UPDATE=1"]
    argv = submit[4:]
    assert argv[1:] == ["evaluate.py", "--track", "filtering", "--train_output_dir", str(work / "train" / "kl_medium"),
                        "--data_dir", str(tmp_path / "evalsets"), "--samples", str(root / "kl.npy"),
                        "--dataset-size", str(n), "--submit", "--method_name", "KL (L/14 text, 25%)", "--author",
                        "A. Author", "--email", "a@b.c", "--hf_username", "me", "--hf_repo_name", "dc"]
    assert {a for a in argv if a.startswith("--")} <= _evaluate_flags(os.path.join(peers, "evaluate.py"))
    assert "kl.npy.json" not in p.stdout.replace("--samples", "")  # the sidecar is never handed over
    assert out[-1].startswith("# a dry run: add --yes") and not work.exists()
