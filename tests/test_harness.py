"""The bridge to DataComp's harness without DataComp: exact commands, the interpreter check, resume, signals,
the submission's flags and DataComp's aggregation of the 38 tasks (fake checkouts that record what they get;
DataComp's own scripts run in tests/test_harness_datacomp.py)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_cli
from kl_filter.core.errors import KLFilterError
from kl_filter.apps.harness.checkout import SHIM_DIR, WRAPPER
from kl_filter.apps.harness.interpreter import PIP
from kl_filter.apps.harness.results import GROUPS, summarize_eval_results
from kl_filter.apps.harness.steps import Submission, build_steps, plan_resume

# flags defined by DataComp's scripts (resharder.py make_argparser, train.py and evaluate.py argparse)
RESHARDER_FLAGS = {"-i", "-o", "-s", "-j"}
TRAIN_FLAGS = {"--scale", "--data_dir", "--output_dir", "--exp_name", "--seed", "--precision", "--workers"}
EVALUATE_FLAGS = {"--train_output_dir", "--data_dir", "--track", "--samples", "--dataset-size", "--submit",
                  "--method_name", "--author", "--email", "--hf_username", "--hf_repo_name", "--writeup",
                  "--upload_checkpoint"}
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
PY = sys.executable


@pytest.mark.parametrize("scale", ["debug", "small", "medium", "large", "xlarge"])
def test_commands_per_scale(scale):
    steps = build_steps("/dc", scale, "/u/kl.npy", "/pool/shards", "/w", num_gpus=8, seed=3, eval_data_dir="/ev",
                        python="/env/bin/python", num_workers=5)
    assert [s.name for s in steps] == ["reshard", "train", "evaluate"]
    assert steps[0].argv == ["/env/bin/python", "resharder.py", "-i", "/pool/shards", "-o", "/w/shards", "-s",
                             "/u/kl.npy", "-j", "5"]
    # torchrun from the interpreter in use, DataComp's flags only: the scale's hyper-parameters are DataComp's
    assert steps[1].argv == ["/env/bin/python", *TORCHRUN, "8", "train.py", "--scale", scale, "--data_dir",
                             "/w/shards", "--output_dir", "/w/train", "--exp_name", f"kl_{scale}", "--seed", "3"]
    assert steps[1].env["PYTHONPATH"].split(os.pathsep)[0] == SHIM_DIR  # the training shim for open_clip >= 2.26
    assert steps[2].argv == ["/env/bin/python", "evaluate.py", "--train_output_dir", f"/w/train/kl_{scale}",
                             "--data_dir", "/ev"]
    for s, allowed in zip(steps, (RESHARDER_FLAGS, TRAIN_FLAGS, EVALUATE_FLAGS)):
        flags = {a for a in s.argv if a.startswith("-") and a not in TORCHRUN}
        assert flags <= allowed  # never a flag DataComp's scripts (or open_clip behind them) would reject
    # an interpreter whose open_clip still has `training`: no shim
    assert "PYTHONPATH" not in build_steps("/dc", scale, "/u/kl.npy", "/p", "/w", trainer="training")[1].env


def test_tiny_scale_runs_train_py_through_the_wrapper():
    steps = build_steps("/dc", "tiny", "/u/kl.npy", "/p", "/w", skip_eval=True, python="/py")
    assert [s.name for s in steps] == ["reshard", "train"]
    assert steps[1].argv == ["/py", *TORCHRUN, "1", WRAPPER, "train.py", "--scale", "tiny", "--data_dir",
                             "/w/shards", "--output_dir", "/w/train", "--exp_name", "kl_tiny", "--seed", "0",
                             "--precision", "fp32", "--workers", "0"]
    assert steps[1].env["OMP_NUM_THREADS"] == "1"


def test_tiny_scale_config_is_the_tracks_student():
    from kl_filter.apps.harness.checkout import KL_SCALES
    from kl_filter.apps.tiny.models import MODEL_CONFIGS, STUDENT

    with open(os.path.join(SHIM_DIR, "model_configs", f"{STUDENT}.json")) as f:
        assert json.load(f) == MODEL_CONFIGS[STUDENT]
    tiny = KL_SCALES["tiny"]
    assert tiny["model"] == STUDENT and tiny["batch_size"] == 32
    # train.py passes --train-num-samples N // 5 (5 checkpoints) to open_clip: 2 batches an epoch, 10 steps
    assert tiny["train_num_samples"] // 5 // tiny["batch_size"] * 5 == 10


def test_datacomp_extra_lists_what_the_scripts_import():
    """pyproject's `datacomp` extra = the requirements the refusal names; one webdataset range everywhere."""
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert set(extras["datacomp"]) == set(PIP.values())
    wds = PIP["webdataset"]
    assert wds == "webdataset>=0.2.48,<0.2.86"
    for name in ("train", "test", "datacomp"):
        assert [r for r in extras[name] if r.startswith("webdataset")] == [wds], name
    for module in ("cv2", "simdjson", "img2dataset", "cloudpathlib", "braceexpand", "pandas"):  # what CI runs
        assert any(r.split(">")[0].split("<")[0] == PIP[module].split(">")[0] for r in extras["test"]), module
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert wds in readme and "<=0.2.86" not in readme


def test_submission_flags_are_evaluate_pys():
    sub = Submission("KL filter (D_KL, L/14 text)", "A. Author", "a@b.c", "me", "dc-sub", writeup="https://x",
                     upload_checkpoint=True)
    steps = build_steps("/dc", "medium", "/u/kl.npy", "/p", "/w", eval_data_dir="/ev", python="/py",
                        submission=sub, dataset_size=1234)
    assert steps[-1].name == "submit"
    assert steps[-1].argv == [
        "/py", "evaluate.py", "--track", "filtering", "--train_output_dir", "/w/train/kl_medium", "--data_dir", "/ev",
        "--samples", "/u/kl.npy", "--dataset-size", "1234", "--submit", "--method_name", "KL filter (D_KL, L/14 text)",
        "--author", "A. Author", "--email", "a@b.c", "--hf_username", "me", "--hf_repo_name", "dc-sub",
        "--writeup", "https://x", "--upload_checkpoint"]
    assert not any(a.endswith(".json") for a in steps[-1].argv)  # never the sidecar


def test_dry_run_without_checkout(tmp_path):
    p = run_cli("harness", "--datacomp_dir", tmp_path / "nope", "--scale", "small", "--uids", "u.npy",
                "--shards_dir", "in", "--work_dir", tmp_path / "w", "--skip_eval", "--num_workers", "3", "--dry_run")
    assert p.returncode == 0, p.stderr
    assert "does not look like a DataComp checkout" in p.stderr
    lines = p.stdout.strip().splitlines()
    # every path absolute: DataComp's scripts run inside the checkout, where relative paths would not resolve
    assert len(lines) == 2 and f"resharder.py -i {os.path.abspath('in')} -o {tmp_path / 'w' / 'shards'}" in lines[0]
    assert lines[0].endswith("-j 3") and "-m torch.distributed.run" in lines[1] and "train.py --scale small" in lines[1]
    assert not (tmp_path / "w").exists()


def test_bad_inputs(tmp_path):
    p = run_cli("harness", "--datacomp_dir", tmp_path, "--scale", "huge", "--uids", "u", "--shards_dir", "i",
                "--work_dir", "w")
    assert p.returncode == 2 and "invalid choice" in p.stderr
    (tmp_path / "train.py").write_text("")
    p = run_cli("harness", "--datacomp_dir", tmp_path, "--scale", "small", "--uids", tmp_path / "missing.npy",
                "--shards_dir", "i", "--work_dir", tmp_path / "w", "--skip_eval")
    assert p.returncode == 2 and "missing.npy: no such UID file" in p.stderr


def _fake_datacomp(d, resharder=None):
    """A checkout whose scripts record their argv, cwd and environment (calls.jsonl) and write what DataComp's
    write: the resharder its meta.json and sample_ids.npy, train.py info.pkl, evaluate.py 38 results."""
    tasks = ["ImageNet 1k"] + [t for g in GROUPS.values() for t in g]
    tasks += [f"extra {i}" for i in range(38 - len(tasks))]
    body = f'''
import json, os, shutil, sys
args = sys.argv[1:]
def val(flag):
    return args[args.index(flag) + 1]
name = os.path.basename(sys.argv[0])
with open(os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "calls.jsonl"), "a") as f:
    env = {{k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS", "NO_ALBUMENTATIONS_UPDATE")}}
    f.write(json.dumps({{"script": name, "cwd": os.getcwd(), "argv": args, "env": env}}) + "\\n")
if name == "resharder.py":
    shutil.copy(val("-s"), os.path.join(val("-o"), "sample_ids.npy"))
    open(os.path.join(val("-o"), "meta.json"), "w").write("{{}}")
elif name == "train.py":
    d = os.path.join(val("--output_dir"), val("--exp_name"))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "info.pkl"), "wb").write(b"x")
else:
    with open(os.path.join(val("--train_output_dir"), "eval_results.jsonl"), "w") as f:
        for i, t in enumerate({tasks!r}):
            f.write(json.dumps({{"dataset": t, "metrics": {{"main_metric": 0.5 + i / 100}}}}) + "\\n")
'''
    os.makedirs(d, exist_ok=True)
    for s in ("resharder.py", "train.py", "evaluate.py"):
        (d / s).write_text(resharder if (s == "resharder.py" and resharder) else body)
    return d


def _inputs(tmp_path):
    (tmp_path / "shards").mkdir()
    np.save(tmp_path / "u.npy", np.array([(0, 1), (0, 2), (0, 2)], np.dtype("u8,u8")))
    (tmp_path / "ev").mkdir()
    return ["--uids", tmp_path / "u.npy", "--shards_dir", tmp_path / "shards", "--eval_data_dir", tmp_path / "ev",
            "--work_dir", tmp_path / "w", "--num_workers", "2"]


@pytest.mark.slow
def test_dry_run_prints_what_the_real_run_executes_and_a_rerun_resumes(tmp_path):
    pytest.importorskip("torch")
    dc = _fake_datacomp(tmp_path / "dc")
    args = ["harness", "--datacomp_dir", dc, "--scale", "small", *_inputs(tmp_path)]
    dry = run_cli(*args, "--dry_run")
    assert dry.returncode == 0, dry.stderr
    printed = dry.stdout.strip().splitlines()
    assert len(printed) == 3 and not (tmp_path / "w").exists()  # a dry run writes nothing
    real = run_cli(*args)
    assert real.returncode == 0, real.stderr
    ran = [line.split(": ", 2)[2] for line in real.stdout.splitlines() if line.startswith("harness: ")
           and ": cd " in line]
    assert ran == printed
    calls = [json.loads(x) for x in open(dc / "calls.jsonl")]
    assert [c["script"] for c in calls] == ["resharder.py", "train.py", "evaluate.py"]
    for line, call in zip(printed, calls):
        words = shlex.split(line)
        assert words[:3] == ["cd", str(dc), "&&"] and call["cwd"] == str(dc)
        n = 3
        while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[n]):
            n += 1
        env, argv = dict(w.split("=", 1) for w in words[3:n]), words[n:]
        assert argv[0] == PY
        assert argv[argv.index(call["script"]) + 1:] == call["argv"]  # the script's own argv, as printed
        for k, v in env.items():
            assert call["env"][k] == v, k  # the environment, as printed (PYTHONPATH of the shim included)
    assert calls[1]["env"]["PYTHONPATH"].split(os.pathsep)[0] == SHIM_DIR
    res = json.loads((tmp_path / "w" / "results.json").read_text())
    assert abs(res["ImageNet"] - 0.5) < 1e-12
    # a rerun keeps the finished reshard and training, reruns evaluate.py (which skips what it has)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "harness: reshard: done earlier" in again.stdout and "harness: train: done earlier" in again.stdout
    assert [json.loads(x)["script"] for x in open(dc / "calls.jsonl")][3:] == ["evaluate.py"]
    assert run_cli(*args, "--dry_run").stdout.splitlines()[:2] == [
        f"# reshard: done earlier ({tmp_path / 'w' / 'shards' / 'meta.json'} of this UID file)",
        f"# train: done earlier ({tmp_path / 'w' / 'train' / 'u_small' / 'info.pkl'})"]


def test_resume_rules(tmp_path):
    uids = tmp_path / "u.npy"
    np.save(uids, np.array([(0, 1)], np.dtype("u8,u8")))
    work = tmp_path / "w"
    shards, run = work / "shards", work / "train" / "u_small"
    steps = lambda: build_steps("/dc", "small", str(uids), "/p", str(work), skip_eval=True)  # noqa: E731
    shards.mkdir(parents=True)
    (shards / "00000000.tar").write_bytes(b"partial")  # an interrupted resharder: no meta.json
    s = steps()
    plan_resume(s, str(uids))
    assert not s[0].skip and "interrupted reshard left 1 files" in s[0].note and not s[1].skip
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_latest.pt").write_bytes(b"x")
    s = steps()
    plan_resume(s, str(uids))
    assert not s[1].skip and "resumes from" in s[1].note and "--resume latest" in s[1].note
    (shards / "meta.json").write_text("{}")
    (shards / "sample_ids.npy").write_bytes(b"another subset")
    with pytest.raises(KLFilterError, match="holds the reshard of another UID file"):
        plan_resume(steps(), str(uids))
    (shards / "sample_ids.npy").write_bytes(uids.read_bytes())
    (run / "info.pkl").write_bytes(b"x")
    s = steps()
    plan_resume(s, str(uids))
    assert s[0].skip and s[1].skip
    (shards / "meta.json").unlink()
    (shards / "notes.txt").write_text("mine")
    with pytest.raises(KLFilterError, match="did not write .notes.txt"):
        plan_resume(steps(), str(uids))


def test_evaluation_needs_the_downloaded_sets_and_submit_its_flags(tmp_path):
    dc = _fake_datacomp(tmp_path / "dc")
    args = ["harness", "--datacomp_dir", dc, "--scale", "small", *_inputs(tmp_path)]
    i = args.index("--eval_data_dir")
    no_eval = args[:i] + args[i + 2:]
    for extra, words in (([], ["download_evalsets.py", "--eval_data_dir", "--skip_eval"]),
                         (["--submit", "--skip_eval"], ["drop --skip_eval"]),
                         (["--submit"], ["download_evalsets.py"])):
        p = run_cli(*no_eval, *extra)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert all(w in p.stderr for w in words), p.stderr
    p = run_cli(*args, "--submit", "--method_name", "m", "--author", "a")
    assert p.returncode == 2 and "--submit needs --email, --hf_username, --hf_repo_name" in p.stderr
    p = run_cli("harness", "--datacomp_dir", dc, "--scale", "tiny", *args[5:], "--submit")
    assert p.returncode == 2 and "smoke scale, not a DataComp scale" in p.stderr
    assert not (tmp_path / "w").exists() and not (dc / "calls.jsonl").exists()


def test_missing_modules_one_line_before_any_work(tmp_path):
    """An interpreter without DataComp's packages (a bare venv): one line naming the modules and the pip command,
    exit 2, nothing written, no step started."""
    import venv

    dc = tmp_path / "dc"
    dc.mkdir()
    (dc / "resharder.py").write_text("import json\nimport numpy as np\nimport cv2\nfrom img2dataset.blurrer import B\n")
    (dc / "train.py").write_text("import torch\nfrom training.main import main\n")
    (dc / "evaluate.py").write_text("")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    p = run_cli("harness", "--datacomp_dir", dc, "--scale", "small", "--python", py, *_inputs(tmp_path),
                "--skip_eval")
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert f"{py} cannot run DataComp's resharder.py, train.py: no module cv2, img2dataset, numpy, " \
           "open_clip_train, torch" in line
    assert f"install: {py} -m pip install 'img2dataset>=1.40' 'numpy>=1.24' 'open_clip_torch>=2.26' " \
           "'opencv-python-headless>=4.6' 'torch>=2.4'" in line
    assert not (tmp_path / "w").exists() and sorted(os.listdir(dc)) == ["evaluate.py", "resharder.py", "train.py"]


def test_webdataset_without_what_the_resharder_reads(tmp_path):
    """webdataset >= 0.2.86 has no writer.gopen.Pipe, which DataComp's resharder reads at import: named, with the
    range that has it."""
    fake = tmp_path / "site" / "webdataset"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.2.86'\nfrom . import writer\n")
    (fake / "writer.py").write_text("def gopen(url):\n    pass\n")
    dc = tmp_path / "dc"
    dc.mkdir()
    (dc / "resharder.py").write_text("import webdataset as wds\n\nPipe = wds.writer.gopen.Pipe\n\n\n"
                                     "def later():\n    return wds.not_checked_here\n")
    (dc / "train.py").write_text("import json\n")
    p = run_cli("harness", "--datacomp_dir", dc, "--scale", "small", *_inputs(tmp_path), "--skip_eval",
                env={"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}"})
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert ("cannot run DataComp's resharder.py: webdataset 0.2.86: no webdataset.writer.gopen.Pipe "
            "(resharder.py line 3); install: ") in p.stderr
    assert "-m pip install 'webdataset>=0.2.48,<0.2.86'" in p.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_steps_whole_process_group(tmp_path, signum):
    """SIGINT/SIGTERM to the harness reach the running script and every process it started (one process group),
    and the harness waits for them; the status says which signal."""
    resharder = f'''
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
with open({str(tmp_path / "pids")!r} + ".tmp", "w") as f:
    f.write(f"{{os.getpid()}} {{child.pid}}")
os.rename({str(tmp_path / "pids")!r} + ".tmp", {str(tmp_path / "pids")!r})
time.sleep(300)
'''
    dc = _fake_datacomp(tmp_path / "dc", resharder=resharder)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "kl_filter", "harness", "--datacomp_dir", str(dc), "--scale", "small",
           *map(str, _inputs(tmp_path)), "--skip_eval"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "pids").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
    t0 = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert time.monotonic() - t0 < 10
    assert f"stopped by {signal.Signals(signum).name} during DataComp's reshard step" in err
    for pid in pids:  # the script and its child: both gone (reaped or not, no longer running)
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().split(")")[-1].split()[0] == "Z", pid
        except FileNotFoundError:
            pass


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


def test_check_uids_allow_missing_is_datacomps_warning(tmp_path):
    """Refused by default (the file was made from another pool); with --allow_missing, DataComp's resharder's
    behaviour: counted, warned about, the rest accepted."""
    from minipool import make_minipool

    from kl_filter.core.uids import hex_to_u8u8, load_uids, sort_uids, u8u8_to_hex

    root = make_minipool(tmp_path / "pool")
    full = tmp_path / "all.npy"
    run_cli("select", "--name", "no_filter", "--metadata_dir", root, "--save_path", full, check=True)
    arr = load_uids(str(full))
    foreign = hex_to_u8u8(["f" * 32, "e" * 32])
    np.save(tmp_path / "mixed.npy", sort_uids(np.concatenate([arr[:10], foreign])))
    p = run_cli("check-uids", tmp_path / "mixed.npy", "--metadata_dir", root)
    assert p.returncode == 2 and "2 uids are not in the pool (first: eeee" in p.stderr
    p = run_cli("check-uids", tmp_path / "mixed.npy", "--metadata_dir", root, "--allow_missing")
    assert p.returncode == 0, p.stderr
    assert "12 uids, 0 duplicated, 10 in the pool of 600, 2 not" in p.stdout
    assert "2 uids are not in the pool (first: " + u8u8_to_hex(foreign[1:])[0].decode() in p.stderr
