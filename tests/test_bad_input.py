"""Bad input: one line naming the file and the problem, exit status 2, and no output file left behind."""

import os

import numpy as np
import pytest

from conftest import DiskFull, run_cli
from minipool import make_minipool, unit, write_shard


def _fault_pool(tmp_path, fault):
    root = tmp_path / "pool"
    make_minipool(root)
    bad = root / "00000001"
    rng = np.random.default_rng(0)
    if fault == "missing_npz":
        os.remove(f"{bad}.npz")
    elif fault == "npz_missing_key":
        z = dict(np.load(f"{bad}.npz"))
        z.pop("l14_txt")
        np.savez(f"{bad}.npz", **z)
    elif fault == "row_mismatch":
        write_shard(root, "00000001", 300, seed=1, uid_start=300, l14_img=unit(rng, 299, 768))
    elif fault == "wrong_dim":
        write_shard(root, "00000001", 300, seed=1, uid_start=300, l14_img=unit(rng, 300, 512))
    elif fault == "nan_embedding":
        x = unit(rng, 300, 768)
        x[17, 3] = np.nan
        write_shard(root, "00000001", 300, seed=1, uid_start=300, l14_img=x)
    elif fault == "not_unit_norm":
        write_shard(root, "00000001", 300, seed=1, uid_start=300, l14_img=(unit(rng, 300, 768) * 2).astype(np.float16))
    elif fault == "malformed_uid":
        uids = [f"{i:032x}" for i in range(300, 600)]
        uids[5] = "xyz"
        write_shard(root, "00000001", 300, seed=1, uid_start=300, uid=uids)
    elif fault == "duplicate_uid":
        write_shard(root, "00000001", 300, seed=1, uid_start=299)  # uid 299 is also in shard 0
    elif fault == "corrupt_parquet":
        data = open(f"{bad}.parquet", "rb").read()
        open(f"{bad}.parquet", "wb").write(data[: len(data) // 2])
    elif fault == "truncated_npz":
        data = open(f"{bad}.npz", "rb").read()
        open(f"{bad}.npz", "wb").write(data[: len(data) // 3])
    elif fault == "empty_pool":
        for f in os.listdir(root):
            os.remove(root / f)
    return root, bad


FAULTS = {
    # fault: (what the message must say, the file it must name)
    "missing_npz": ("npz file missing", "00000001.npz"),
    "npz_missing_key": ("npz has no key 'l14_txt'", "00000001.npz"),
    "row_mismatch": ("299", "00000001.npz"),
    "wrong_dim": ("dimension 512, expected 768", "00000001.npz"),
    "nan_embedding": ("row 17 has NaN", "00000001.npz"),
    "not_unit_norm": ("expected unit norm", "00000001.npz"),
    "malformed_uid": ("32 hex digits", "00000001.parquet"),
    "duplicate_uid": ("more than once", "00000001.parquet"),
    "corrupt_parquet": ("unreadable parquet", "00000001.parquet"),
    "truncated_npz": ("unreadable npz", "00000001.npz"),
    "empty_pool": ("empty pool", "pool"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_gives_one_line_error_and_no_output(tmp_path, fault):
    root, _ = _fault_pool(tmp_path, fault)
    out = tmp_path / "out" / "subset.npy"
    needs_emb = fault in {"missing_npz", "npz_missing_key", "row_mismatch", "wrong_dim", "nan_embedding",
                          "not_unit_norm", "truncated_npz"}
    args = (["--name", "kl", "--mode", "kl", "--arch", "l14", "--target", "txt" if fault == "npz_missing_key" else "img",
             "--fraction", "0.25", "--num_samples", "20"] if needs_emb else ["--name", "clip_score", "--arch", "l14", "--fraction", "0.3"])
    p = run_cli("select", *args, "--metadata_dir", root, "--save_path", out, "--no_progress", "--num_workers", "1")
    msg, file = FAULTS[fault]
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert msg in lines[0] and file in lines[0], lines[0]
    assert not out.exists() and not (tmp_path / "out" / "subset.npy.json").exists()
    leftovers = [f for f in os.listdir(tmp_path / "out")] if (tmp_path / "out").exists() else []
    assert not [f for f in leftovers if f.endswith(".tmp")]


@pytest.mark.parametrize("flag,value,msg", [("--fraction", "0", "must be in (0, 1]"), ("--fraction", "1.5", "must be in (0, 1]"),
                                            ("--threshold", "nan", "finite")])
def test_fraction_threshold_out_of_range(tmp_path, flag, value, msg):
    root = make_minipool(tmp_path / "pool")
    p = run_cli("select", "--name", "clip_score", "--arch", "b32", flag, value, "--metadata_dir", root,
                "--save_path", tmp_path / "o.npy")
    assert p.returncode == 2 and msg in p.stderr and not (tmp_path / "o.npy").exists()


def test_datacomp_argument_checks(tmp_path):
    root = make_minipool(tmp_path / "pool")
    base = ["--metadata_dir", root, "--save_path", tmp_path / "o.npy"]
    cases = [(["--name", "laion2b", "--arch", "b32"], "--arch not used by --name laion2b"),
             (["--name", "clip_score", "--arch", "b32"], "exactly one of --fraction or --threshold"),
             (["--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--threshold", "0.2"], "exactly one of"),
             (["--name", "no_filter", "--fraction", "0.3"], "--fraction not used by --name no_filter")]
    for args, msg in cases:
        p = run_cli("select", *args, *base)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    assert not (tmp_path / "o.npy").exists()


def test_unwritable_output(tmp_path):
    root = make_minipool(tmp_path / "pool")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        p = run_cli("select", "--name", "no_filter", "--metadata_dir", root, "--save_path", ro / "o.npy")
        assert p.returncode == 2 and "not writable" in p.stderr
    finally:
        ro.chmod(0o700)


def test_disk_full_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing the UID file: one-line error, no file, no temp file."""
    from fsspec.implementations.local import LocalFileSystem

    from kl_filter.core.errors import KLFilterError
    from kl_filter.filters import build_filter
    from kl_filter.runner import run_filter

    root = make_minipool(tmp_path / "pool")
    real_open = LocalFileSystem.open

    def open_full(self, name, mode="rb", **k):
        f = real_open(self, name, mode, **k)
        return DiskFull(f) if "w" in mode else f

    # on the class: fsspec caches one LocalFileSystem instance, and an attribute patched onto it would outlive
    # the test (monkeypatch restores it as an instance attribute, shadowing later class-level patches)
    monkeypatch.setattr(LocalFileSystem, "open", open_full)
    out = tmp_path / "out"
    with pytest.raises(KLFilterError, match="No space left on device"):
        run_filter(build_filter("no_filter"), root, str(out / "u.npy"))
    assert os.listdir(out) == []


def test_stats_from_another_pool(tmp_path):
    a = make_minipool(tmp_path / "a")
    b = make_minipool(tmp_path / "b", n=301)
    stats = tmp_path / "a_stats.npz"
    run_cli("stats", "--metadata_dir", a, "--out", stats, "--num_samples", "10", "--no_moments", check=True)
    p = run_cli("select", "--name", "kl", "--fraction", "0.25", "--stats", stats, "--metadata_dir", b,
                "--save_path", tmp_path / "o.npy")
    assert p.returncode == 2 and "computed on another pool" in p.stderr and "a_stats.npz" in p.stderr
    p = run_cli("score", "--metadata_dir", b, "--stats", stats, "--out", tmp_path / "s")
    assert p.returncode == 2 and "another pool" in p.stderr and not (tmp_path / "s").exists()
    assert not (tmp_path / "o.npy").exists()


def test_no_row_passes_caption_filter(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    write_shard(root, "00000000", 50, seed=0, text=["ein roter Apfel auf dem Tisch"] * 50)
    p = run_cli("stats", "--metadata_dir", root, "--out", tmp_path / "s.npz")
    assert p.returncode == 2 and "0 rows pass the caption filter" in p.stderr and not (tmp_path / "s.npz").exists()


def test_empty_shard_is_counted_not_fatal(tmp_path):
    """Policy: an empty shard (0 rows) is processed like any other, warned about and listed in the sidecar."""
    import json

    root = make_minipool(tmp_path / "pool")
    write_shard(root, "00000002", 0, seed=2, uid_start=10_000)
    out = tmp_path / "u.npy"
    p = run_cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.5", "--metadata_dir", root,
                "--save_path", out, "--no_progress")
    assert p.returncode == 0, p.stderr
    assert "1 empty shard(s): 00000002" in p.stderr
    side = json.loads(open(f"{out}.json").read())
    assert side["empty_shards"] == ["00000002"] and side["pool_rows"] == 600 and side["kept"] == 301


def test_check_uids_cli(tmp_path):
    root = make_minipool(tmp_path / "pool")
    good = tmp_path / "good.npy"
    run_cli("select", "--name", "no_filter", "--metadata_dir", root, "--save_path", good, check=True)
    p = run_cli("check-uids", good, "--metadata_dir", root)
    assert p.returncode == 0 and "600 uids" in p.stdout
    arr = np.load(good)
    cases = {"unsorted.npy": (arr[::-1], "not sorted"), "dtype.npy": (arr["f0"], "dtype is uint64"),
             "foreign.npy": (np.sort(np.concatenate([arr, np.array([(7, 7)], arr.dtype)])), "not in the pool")}
    for name, (a, msg) in cases.items():
        np.save(tmp_path / name, a)
        p = run_cli("check-uids", tmp_path / name, "--metadata_dir", root)
        assert p.returncode == 2 and msg in p.stderr and name in p.stderr, (name, p.stderr)
