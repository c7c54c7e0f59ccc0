"""The Ray engine on a local 2-CPU cluster gives byte-identical outputs to the local engine (statistics, score
files, and UID files of top cuts, --uniform and --ties exact, which gather a whole column)."""

import os

import numpy as np
import pytest

from conftest import run_cli

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'kl-filter[ray]'")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster():
    """One local 2-CPU cluster that every command joins with --ray_address (README's scale-out use), instead of
    each starting and stopping its own (10-15 s each on 2 loaded cores; other tests cover that path)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield info.address_info["gcs_address"]
    ray.shutdown()


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
