"""The Ray engine on a local 2-CPU cluster gives byte-identical outputs to the local engine (statistics, score
files, and UID files of top cuts, --uniform and --ties exact, which gather a whole column); and its failures are
one line with exit status 2 (issue 26): Ray's own (a killed dashboard agent takes its raylet down), a task's bad
input, a hung plugin under --task_timeout, an address where no cluster answers."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_cli
from minipool import make_minipool
from test_bad_input_round3b import hang_pool, install_hang_plugins

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'kl-filter[ray]'")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def hang_site(tmp_path_factory):
    """The hang plugins' distribution, on the path of the cluster's workers and of the commands."""
    root = tmp_path_factory.mktemp("ray_plugins")
    install_hang_plugins(root / "site")
    return root


@pytest.fixture(scope="module")
def cluster(hang_site):
    """One local 2-CPU cluster that every command joins with --ray_address (README's scale-out use), instead of
    each starting and stopping its own (10-15 s each on 2 loaded cores; other tests cover that path). Its workers
    can import the hang plugins and say which process hung (``KL_HANG_PIDFILE``)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "KL_HANG_PIDFILE")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(hang_site / "site"), REPO, saved["PYTHONPATH"] or ""])
    os.environ["KL_HANG_PIDFILE"] = str(hang_site / "pids")
    try:
        info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    yield info.address_info["gcs_address"]
    ray.shutdown()


def one_line_exit_2(p, *words) -> str:
    """The command failed with status 2, no traceback, and its LAST stderr line is kl-filter's one error line
    (Ray may print its own notices before it, e.g. its token-authentication warning at start)."""
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and "ray::" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("kl-filter: error: ")]
    assert len(errors) == 1 and p.stderr.strip().splitlines()[-1] == errors[0], p.stderr
    for w in words:
        assert w in errors[0], f"{w!r} not in {errors[0]!r}"
    return errors[0]


@pytest.mark.slow  # 12 commands, six of them joining the Ray cluster (30-45 s on 2 cores)
def test_stats_score_select_identical_to_local(synth_dir, tmp_path, cluster):
    kl = ["--name", "kl", "--mode", "kl", "--arch", "b32", "--target", "txt", "--fraction", "0.25",
          "--clip_score_fraction", "0.5", "--num_samples", "64", "--seed", "1", "--no_progress", "--num_workers", "2"]
    outs = {}
    for engine in ("local", "ray"):
        d = tmp_path / engine
        eng = ["--engine", engine] + (["--ray_address", cluster] if engine == "ray" else [])
        run_cli("stats", "--metadata_dir", synth_dir, "--out", d / "stats.npz", "--arch", "b32", "--num_samples", "64",
                "--seed", "1", "--no_progress", *eng, "--num_workers", "2", env=RAY_ENV, check=True)
        run_cli("score", "--metadata_dir", synth_dir, "--stats", d / "stats.npz", "--out", d / "scores",
                "--modes", "kl", "centered", "--arch", "b32", "--target", "txt", "--no_progress", *eng,
                "--num_workers", "2", env=RAY_ENV, check=True)
        run_cli("select", *kl, "--metadata_dir", synth_dir, "--stats", d / "stats.npz", "--scores_dir", d / "scores",
                "--save_path", d / "kl.npy", *eng, env=RAY_ENV, check=True)
        for rule in (["--uniform", "--num_bins", "50"], ["--ties", "exact"]):  # rules that need the whole column
            run_cli("select", *kl, *rule, "--metadata_dir", synth_dir, "--stats", d / "stats.npz", "--scores_dir",
                    d / "scores", "--save_path", d / f"kl{rule[0]}.npy", *eng, env=RAY_ENV, check=True)
        run_cli("select", "--name", "laion2b", "--metadata_dir", synth_dir, "--save_path", d / "laion.npy",
                *eng, "--no_progress", "--num_workers", "2", env=RAY_ENV, check=True)
        outs[engine] = d
    for f in ("stats.npz", "kl.npy", "kl--uniform.npy", "kl--ties.npy", "laion.npy"):
        a, b = (outs[e] / f for e in ("local", "ray"))
        if f.endswith(".npz"):
            za, zb = np.load(a), np.load(b)
            assert all(np.array_equal(za[k], zb[k]) for k in za.files), f
        else:
            assert a.read_bytes() == b.read_bytes(), f
    shards = sorted(f for f in os.listdir(outs["local"] / "scores") if f.endswith(".parquet"))
    for s in shards:
        import pyarrow.parquet as pq

        assert pq.read_table(outs["local"] / "scores" / s).equals(pq.read_table(outs["ray"] / "scores" / s))


# ---- failures: one line, exit status 2 --------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_a_hung_plugin_on_a_cluster_is_stopped_and_named(cluster, hang_site, tmp_path):
    """--task_timeout on a cluster the command joined: the stuck task's worker process is ended (force-cancelled
    by the driver once the task's watchdog reports), the line names the plugin, its distribution and its line,
    and the cluster still runs tasks."""
    pool = hang_pool(tmp_path / "pool")
    env = {**RAY_ENV, "PYTHONPATH": os.pathsep.join([str(hang_site / "site"), REPO])}
    t = time.perf_counter()
    p = run_cli("select", "--name", "hang", "--metadata_dir", pool, "--save_path", tmp_path / "u.npy",
                "--engine", "ray", "--ray_address", cluster, "--task_timeout", "1", "--no_progress", env=env)
    one_line_exit_2(p, "filter 'hang' (kl_hang_plugins.Hang, distribution kl-hang-plugins) ran past --task_timeout "
                       "1 s (stuck at kl_hang_plugins.py:", "in score())")
    assert time.perf_counter() - t < 60 and not os.path.exists(tmp_path / "u.npy")
    pids = [int(x) for x in open(hang_site / "pids").read().split()]
    deadline = time.time() + 20
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), pids
    assert ray.get(ray.remote(lambda: 41).remote()) + 1 == 42  # the cluster still runs tasks


def test_bad_input_inside_a_task_is_one_line_without_rays_traceback(cluster, tmp_path):
    """A KLFilterError raised in a task (a NaN embedding in the second shard) came wrapped in Ray's remote
    traceback (seven lines starting 'ray::_task()'); now it is the local engine's line."""
    root = tmp_path / "pool"
    make_minipool(root, shards=2, n=50)
    z = dict(np.load(root / "00000001.npz"))
    z["b32_img"][3] = np.nan
    np.savez(root / "00000001.npz", **z)
    p = run_cli("select", "--name", "negcliploss", "--arch", "b32", "--fraction", "0.5", "--batch_size", "20",
                "--num_batches", "1", "--metadata_dir", root, "--scores_dir", tmp_path / "s", "--save_path",
                tmp_path / "u.npy", "--engine", "ray", "--ray_address", cluster, "--no_progress", env=RAY_ENV)
    one_line_exit_2(p, "00000001.npz: key 'b32_img' row 3 has NaN or inf values")
    assert not os.path.exists(tmp_path / "u.npy")


@pytest.mark.parametrize("address, words", [
    ("closed", "no Ray cluster answers there (Connection refused): start one (ray start --head) or leave "
               "--ray_address out"),
    ("::", "--engine ray could not join the Ray cluster at --ray_address ::"),
])
def test_a_ray_address_where_no_cluster_answers(synth_dir, tmp_path, address, words):
    """127.0.0.1:<closed port> retried for minutes inside Ray (over 120 s here) before any message."""
    if address == "closed":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{s.getsockname()[1]}"  # free now, and nothing listens
    t = time.perf_counter()
    p = run_cli("select", "--name", "laion2b", "--metadata_dir", synth_dir, "--save_path", tmp_path / "u.npy",
                "--engine", "ray", "--ray_address", address, "--no_progress", env=RAY_ENV)
    one_line_exit_2(p, words)
    assert time.perf_counter() - t < 30 and not os.path.exists(tmp_path / "u.npy")


def _descendants(pid: int) -> list[int]:
    children: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's processes in /proc")
def test_killing_the_dashboard_agent_is_one_line_and_the_run_resumes(tmp_path):
    """The issue's case: the command starts its own local cluster; once negCLIPLoss's second pass is being
    scored, the cluster's dashboard agent is killed (by pid), which takes the raylet down. Before: a Ray traceback
    (LocalRayletDiedError). Now: one line naming what died and the remedy; resuming with --engine local gives
    the same UID file and scores as a clean local run."""
    root = tmp_path / "pool"
    make_minipool(root, shards=8, n=300)
    args = ["select", "--name", "negcliploss", "--arch", "b32", "--fraction", "0.5", "--batch_size", "100",
            "--num_batches", "30", "--metadata_dir", str(root), "--num_workers", "2", "--no_progress"]
    env = {**os.environ, **RAY_ENV, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    scores = tmp_path / "s"
    cmd = [sys.executable, "-m", "kl_filter", *args, "--scores_dir", str(scores), "--save_path",
           str(tmp_path / "u.npy"), "--engine", "ray"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed, deadline = None, time.time() + 120
    try:
        while killed is None and p.poll() is None and time.time() < deadline:
            buckets = scores / ".buckets"
            second = [d for d in (buckets.iterdir() if buckets.exists() else []) if (d / "pass1" / "out").exists()]
            agents = [c for c in _descendants(p.pid) if "DashboardAgent" in _cmdline(c)]
            if second and agents:
                os.kill(agents[0], signal.SIGKILL)
                killed = agents[0]
            time.sleep(0.05)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert killed is not None, f"the run ended before the second pass (status {p.returncode}): {err}"
    done = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    one_line_exit_2(done, "--engine ray: this node's Ray raylet died", "(LocalRayletDiedError:",
                    "the work already finished is kept: rerun the command (it starts a new local cluster) to "
                    "resume, or resume with --engine local")
    assert not os.path.exists(tmp_path / "u.npy")
    run_cli(*args, "--scores_dir", scores, "--save_path", tmp_path / "u.npy", check=True)
    run_cli(*args, "--scores_dir", tmp_path / "clean", "--save_path", tmp_path / "clean.npy", check=True)
    assert (tmp_path / "u.npy").read_bytes() == (tmp_path / "clean.npy").read_bytes()
    import pyarrow.parquet as pq

    for s in sorted(f for f in os.listdir(scores) if f.endswith(".parquet")):
        assert pq.read_table(scores / s).equals(pq.read_table(tmp_path / "clean" / s)), s
