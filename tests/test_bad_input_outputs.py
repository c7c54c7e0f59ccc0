"""Issue 14, classes 1, 4, 6, 8, 9, 11: outputs never destroy inputs, local paths are plain paths, the UID file
and its sidecar are one output, recipes ship with a regular install, no pickled code runs, and the harness
hands DataComp absolute, checked paths. Every fault is generated here; each must end with one line
``kl-filter: error: <file>: <problem>``, exit status 2, and every input byte-identical."""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest

from conftest import REPO, DiskFull
from minipool import make_minipool, unit, write_shard


def cli(*args):
    """``kl-filter ARGS`` in this process: (exit status, stdout, stderr)."""
    from kl_filter.apps.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def refused(result, *words):
    rc, _, err = result
    lines = [x for x in err.strip().splitlines() if x.startswith("kl-filter: error:")]
    assert rc == 2 and len(lines) == 1, err
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def snap(root) -> dict:
    """Every file under ``root`` (a file or a directory) with its content hash."""
    root = str(root)
    if os.path.isfile(root):
        return {root: hashlib.sha256(open(root, "rb").read()).hexdigest()}
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture
def pool(tmp_path):
    return make_minipool(tmp_path / "pool", shards=2, n=200)


def _tars(d, n=3):
    os.makedirs(d, exist_ok=True)
    with tarfile.open(os.path.join(d, "00000000.tar"), "w") as tf:
        for i in range(n):
            data = json.dumps({"uid": f"{i:032x}"}).encode()
            info = tarfile.TarInfo(f"{i:05d}.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(d)


SELECT = ["select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--no_progress",
          "--num_workers", "1"]


# ---- class 1: outputs never destroy inputs -------------------------------------------------------------------
def _cases(tmp, pool):
    shards, uids = _tars(tmp / "shards"), tmp / "u.npy"
    np.save(uids, np.zeros(0, np.dtype("u8,u8")))
    shard = os.path.join(pool, "00000000.parquet")
    npz = os.path.join(pool, "00000001.npz")
    os.symlink(shard, tmp / "link.npy")
    os.link(npz, tmp / "hard.npz")
    return shards, {
        "scores_dir is the pool": ([*SELECT, "--metadata_dir", pool, "--save_path", tmp / "o.npy", "--scores_dir", pool],
                                   ["--scores_dir is --metadata_dir"]),
        "score --out is the pool": (["score", "--metadata_dir", pool, "--stats", tmp / "s.npz", "--out", pool],
                                    ["--out is --metadata_dir"]),
        "save_path onto a shard": ([*SELECT, "--metadata_dir", pool, "--save_path", shard], ["inside --metadata_dir"]),
        "save_path new file in the pool": ([*SELECT, "--metadata_dir", pool, "--save_path", f"{pool}/new.npy"],
                                           ["inside --metadata_dir"]),
        "save_path a symlink to a shard": ([*SELECT, "--metadata_dir", pool, "--save_path", tmp / "link.npy"],
                                           ["inside --metadata_dir"]),
        "stats onto a shard's npz": ([*SELECT, "--metadata_dir", pool, "--save_path", tmp / "o.npy", "--stats", npz,
                                      "--overwrite"], ["--stats", "inside --metadata_dir"]),
        "stats --out is the --stats input": (["score", "--metadata_dir", pool, "--stats", tmp / "hard.npz", "--out",
                                              tmp / "hard.npz"], ["--out is --stats"]),
        "stats --out onto an npz": (["stats", "--metadata_dir", pool, "--out", npz], ["inside --metadata_dir"]),
        "pool inside the scores dir": ([*SELECT, "--metadata_dir", pool, "--save_path", tmp / "o.npy",
                                        "--scores_dir", tmp], ["inside --scores_dir"]),
        "save_path is --stats": ([*SELECT, "--metadata_dir", pool, "--save_path", tmp / "x.npy", "--stats",
                                  tmp / "x.npy"], ["same path"]),
        "reshard --out is --shards_dir": (["reshard", "--shards_dir", shards, "--uids", uids, "--out", shards,
                                           "--no_progress"], ["--out is --shards_dir"]),
        "reshard --out holds the uids": (["reshard", "--shards_dir", shards, "--uids", uids, "--out", tmp,
                                          "--no_progress"], ["inside --out"]),
        "embed --out is --shards_dir": (["embed", "--shards_dir", shards, "--out", shards, "--model", "ViT-B-32",
                                         "--checkpoint", tmp / "ck.pt"], ["--out is --shards_dir"]),
        "inspect --out holds the pool": (["inspect", "--metadata_dir", pool, "--out", tmp, "--filters",
                                          "--no_progress"], ["--metadata_dir", "inside --out"]),
        "inspect --out is the pool": (["inspect", "--metadata_dir", pool, "--out", pool, "--filters",
                                       "--no_progress"], ["--out is --metadata_dir"]),
        "synth-pool into a real pool": (["synth-pool", pool, "--rows", 100, "--shards", 1, "--no_progress"],
                                        ["not empty and was not made by kl-filter"]),
        "demo --out a user directory": (["demo", "--out", tmp / "shards", "--no_progress"],
                                        ["not empty and was not made by kl-filter"]),
        "track --work_dir a user directory": (["track", "--out", tmp / "t", "--work_dir", tmp / "shards"],
                                              ["not empty and was not made by kl-filter"]),
        "weights --out in the pool": (["weights", "--metadata_dir", pool, "--out", f"{pool}/w.parquet", "--prompt", "a dog",
                                       "--no_progress"], ["--out is inside --metadata_dir"]),
        "harness --work_dir inside the shards": (["harness", "--datacomp_dir", _fake_datacomp(tmp / "dc"), "--scale",
                                                  "small", "--uids", uids, "--shards_dir", shards, "--work_dir",
                                                  f"{shards}/run", "--skip_eval"], ["inside --shards_dir"]),
    }


@pytest.mark.parametrize("case", ["scores_dir is the pool", "score --out is the pool", "save_path onto a shard",
                                  "save_path new file in the pool", "save_path a symlink to a shard",
                                  "stats onto a shard's npz", "stats --out is the --stats input",
                                  "stats --out onto an npz", "pool inside the scores dir", "save_path is --stats",
                                  "reshard --out is --shards_dir", "reshard --out holds the uids",
                                  "embed --out is --shards_dir", "inspect --out holds the pool",
                                  "inspect --out is the pool", "synth-pool into a real pool",
                                  "demo --out a user directory", "track --work_dir a user directory",
                                  "weights --out in the pool", "harness --work_dir inside the shards"])
def test_an_output_never_replaces_an_input(tmp_path, pool, case):
    shards, cases = _cases(tmp_path, pool)
    args, words = cases[case]
    before, before_shards = snap(pool), snap(shards)
    refused(cli(*args), *words)
    assert snap(pool) == before and snap(shards) == before_shards
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("kind", ["directory", "char device", "fifo", "directory --stats", "file as --scores_dir"])
def test_an_output_file_is_only_replaced_when_it_is_a_regular_file(tmp_path, pool, kind):
    target = {"directory": tmp_path / "d.npy", "char device": "/dev/null", "fifo": tmp_path / "f.npy",
              "directory --stats": tmp_path / "s.npz", "file as --scores_dir": tmp_path / "sc"}[kind]
    if kind in ("directory", "directory --stats"):
        os.mkdir(target)
        (target / "keep.txt").write_text("mine")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "file as --scores_dir":
        target.write_text("mine")
    if kind == "directory --stats":
        args = ["stats", "--metadata_dir", pool, "--out", target]
    elif kind == "file as --scores_dir":
        args = [*SELECT, "--metadata_dir", pool, "--save_path", tmp_path / "o.npy", "--scores_dir", target]
    else:
        args = [*SELECT, "--metadata_dir", pool, "--save_path", target]
    refused(cli(*args), str(target),
            "must be a directory" if kind == "file as --scores_dir" else "not a regular file" if kind in
            ("char device", "fifo") else "is a directory, not a file")
    if kind in ("directory", "directory --stats"):
        assert os.listdir(target) == ["keep.txt"]
    if kind == "fifo":
        assert not os.path.isfile(target)  # still the FIFO
    if kind == "char device":
        assert not os.path.isfile("/dev/null")


def test_inspect_never_replaces_a_directory_it_did_not_make(tmp_path, pool):
    from kl_filter.core.outputs import MARKER

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "figures.json").write_text("{}")  # a figures.json alone proves nothing
    (mine / "thesis.tex").write_text("precious")
    refused(cli("inspect", "--metadata_dir", pool, "--out", mine, "--filters", "--no_progress"),
            str(mine), "not a kl-filter report")
    assert sorted(os.listdir(mine)) == ["figures.json", "thesis.tex"]
    # a scores directory is kl-filter's, but not a report: refused too (replacing it would delete score files)
    scores = tmp_path / "scores"
    rc, _, err = cli("select", "--name", "kl", "--mode", "kl", "--arch", "b32", "--target", "txt", "--fraction",
                     "0.25", "--num_samples", "20", "--metadata_dir", pool, "--save_path", tmp_path / "k.npy",
                     "--scores_dir", scores, "--no_progress", "--num_workers", "1")
    assert rc == 0, err
    assert json.loads((scores / MARKER).read_text())["kind"] == "scores"
    refused(cli("inspect", "--metadata_dir", pool, "--out", scores, "--filters", "--no_progress"),
            "kl-filter scores directory, not a report")
    # a report it made is replaced (marker), and what a killed run left beside it is cleaned up
    from kl_filter.core.atomic import _HOST

    out = tmp_path / "rep"
    args = ["inspect", "--metadata_dir", pool, "--out", out, "--filters", "--sample_size", "50", "--examples", "2",
            "--bins", "5", "--ngram_top_k", "3", "--num_workers", "1", "--no_progress"]
    assert cli(*args)[0] == 0 and json.loads((out / MARKER).read_text())["kind"] == "report"
    dead = tmp_path / f".rep.{_HOST}-999999-abcdef.tmp"  # a killed run's temporary report directory
    dead.mkdir()
    (dead / "index.html").write_text("half")
    rc, _, err = cli(*args)
    assert rc == 0, err
    assert not dead.exists() and (out / "index.html").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".rep.")]


def test_scores_dir_of_an_earlier_version_is_recognised(tmp_path, pool):
    """A scores directory written before markers existed holds only kl-filter score files: still used."""
    from kl_filter.core.outputs import MARKER

    scores = tmp_path / "scores"
    kl = ["select", "--name", "kl", "--mode", "kl", "--arch", "b32", "--target", "txt", "--fraction", "0.25",
          "--num_samples", "20", "--metadata_dir", pool, "--scores_dir", scores, "--no_progress", "--num_workers", 1]
    assert cli(*kl, "--save_path", tmp_path / "a.npy")[0] == 0
    os.remove(scores / MARKER)
    rc, _, err = cli(*kl, "--save_path", tmp_path / "b.npy")
    assert rc == 0, err
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    # a foreign parquet among them: not ours, so not written into
    os.remove(scores / MARKER)
    shutil.copy(os.path.join(pool, "00000000.parquet"), scores / "data.parquet")
    refused(cli(*kl, "--save_path", tmp_path / "c.npy"), "data.parquet", "not made by kl-filter")


# ---- class 4: local paths are plain paths; URLs only with a protocol ------------------------------------------
def test_double_colon_in_local_paths_is_part_of_the_name(tmp_path):
    """``::`` in a pool directory, shard names, a scores directory and the UID file: never an fsspec chain."""
    plain = make_minipool(tmp_path / "plain", shards=2, n=200)
    odd = tmp_path / "po::ol"
    odd.mkdir()
    for s in range(2):
        write_shard(odd, f"part::{s}", 200, seed=s, uid_start=s * 200)
    kl = ["select", "--name", "kl", "--mode", "kl", "--arch", "b32", "--target", "txt", "--fraction", "0.25",
          "--num_samples", "20", "--no_progress", "--num_workers", "1"]
    assert cli(*kl, "--metadata_dir", plain, "--save_path", tmp_path / "plain.npy")[0] == 0
    out = tmp_path / "run::a.npy"
    rc, _, err = cli(*kl, "--metadata_dir", odd, "--save_path", out, "--scores_dir", tmp_path / "sc::x")
    assert rc == 0, err
    assert sorted(f for f in os.listdir(tmp_path / "sc::x") if f.endswith(".parquet")) == \
        ["part::0.parquet", "part::1.parquet"]  # two shards, two score files (a chain would give one file "part")
    assert out.read_bytes() == (tmp_path / "plain.npy").read_bytes()
    assert json.loads((tmp_path / "run::a.npy.json").read_text())["uids_file"]["name"] == "run::a.npy"
    assert not (tmp_path / "run").exists() and not (tmp_path / "sc").exists() and not (tmp_path / "po").exists()
    from kl_filter.core.uids import check_sidecar

    assert check_sidecar(str(out))[1]


@pytest.mark.parametrize("flag,url,words", [
    ("--save_path", "nosuchproto://bucket/u.npy", ["unknown protocol 'nosuchproto'"]),
    ("--metadata_dir", "nosuchproto://bucket/pool", ["unknown protocol"]),
    ("--scores_dir", "nosuchproto://bucket/scores", ["unknown protocol"]),
    ("--save_path", "s3://bucket/u.npy", ["protocol 's3' needs a package", "s3fs"]),
])
def test_a_protocol_that_cannot_be_used_is_one_line_before_any_work(tmp_path, pool, flag, url, words):
    if "s3fs" in words:
        import importlib.util

        if importlib.util.find_spec("s3fs"):
            pytest.skip("s3fs is installed here")
    args = {"--metadata_dir": pool, "--save_path": tmp_path / "o.npy", flag: url}
    line = refused(cli(*SELECT, *[x for kv in args.items() for x in kv]), url, *words)
    assert line.startswith(f"kl-filter: error: {url}:")
    assert os.listdir(tmp_path) == ["pool"]  # nothing written anywhere


def test_file_url_is_the_local_path(tmp_path, pool):
    assert cli(*SELECT, "--metadata_dir", pool, "--save_path", tmp_path / "a.npy")[0] == 0
    rc, _, err = cli(*SELECT, "--metadata_dir", f"file://{pool}", "--save_path", f"file://{tmp_path}/b.npy")
    assert rc == 0, err
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


# ---- class 6: the UID file and its sidecar are one output ------------------------------------------------------
def test_sidecar_names_its_uid_file_and_check_uids_verifies_the_pair(tmp_path, pool):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert cli(*SELECT, "--metadata_dir", pool, "--save_path", a)[0] == 0
    assert cli("select", "--name", "no_filter", "--metadata_dir", pool, "--save_path", b, "--no_progress")[0] == 0
    side = json.loads((tmp_path / "a.npy.json").read_text())["uids_file"]
    assert side["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest() and side["rows"] == len(np.load(a))
    rc, out, _ = cli("check-uids", a, "--metadata_dir", pool)
    assert rc == 0 and "sidecar matches" in out
    shutil.copy(b, a)  # a pair mixed as a run killed between its two renames (or a concurrent run) leaves it
    refused(cli("check-uids", a), "a.npy.json", "does not belong to this UID file")
    os.remove(tmp_path / "a.npy.json")
    rc, out, _ = cli("check-uids", a)
    assert rc == 0 and "no sidecar" in out


def test_full_disk_while_writing_the_pair_replaces_nothing(tmp_path, pool, monkeypatch):
    """The sidecar's temp file is complete when the UID file's runs out of space: the previous pair stays."""
    from fsspec.implementations.local import LocalFileSystem

    out = tmp_path / "o"
    save = out / "u.npy"
    assert cli("select", "--name", "no_filter", "--metadata_dir", pool, "--save_path", save, "--no_progress")[0] == 0
    before = snap(out)
    real, opened = LocalFileSystem.open, []

    def open_(self, name, mode="rb", **k):
        f = real(self, name, mode, **k)
        if "w" in mode and str(name).endswith(".tmp"):
            opened.append(name)
            if len(opened) == 2:
                return DiskFull(f)
        return f

    monkeypatch.setattr(LocalFileSystem, "open", open_)
    refused(cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.5", "--metadata_dir", pool,
                "--save_path", save, "--no_progress"), "No space left on device", "nothing was written")
    assert len(opened) == 2 and opened[0].endswith(".tmp") and ".u.npy.json." in opened[0]
    assert snap(out) == before  # the previous pair, intact; no temp file left


def test_concurrent_writers_never_mix_a_pair(tmp_path):
    from kl_filter.core.uids import check_sidecar, save_uids_with_sidecar

    path = str(tmp_path / "u.npy")
    arrays = [np.array([(i, j) for j in range(50 + i)], np.dtype("u8,u8")) for i in range(2)]

    def writer(i):
        for _ in range(25):
            save_uids_with_sidecar(path, arrays[i], {"writer": i})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc, verified = check_sidecar(path)
    assert verified and doc["uids_file"]["rows"] == len(arrays[doc["writer"]]) == len(np.load(path))
    assert [f for f in os.listdir(tmp_path)] and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_killed_writers_temp_files_are_cleaned_by_the_next_run(tmp_path, pool):
    from kl_filter.core.atomic import _HOST

    out = tmp_path / "o"
    out.mkdir()
    dead = [out / f".u.npy.{_HOST}-999999-abcdef.tmp", out / f".u.npy.json.{_HOST}-999999-abcdef.tmp"]
    live = out / f".u.npy.{_HOST}-{os.getpid()}-abcdef.tmp"  # a writer still running: left alone
    other = out / ".notes.txt.tmp"  # not a kl-filter temp name: never touched
    for f in dead + [live, other]:
        f.write_bytes(b"partial")
    assert cli("select", "--name", "no_filter", "--metadata_dir", pool, "--save_path", out / "u.npy",
               "--no_progress")[0] == 0
    assert not any(f.exists() for f in dead) and live.exists() and other.exists()


def test_failed_statistics_keep_only_resumable_partials_and_say_so(tmp_path):
    root = make_minipool(tmp_path / "pool", shards=3, n=200)
    rng = np.random.default_rng(0)
    x = unit(rng, 200, 512)
    x[17, 3] = np.nan
    write_shard(root, "00000002", 200, seed=2, uid_start=400, b32_img=x)
    stats = tmp_path / "s.npz"
    parts = tmp_path / "s.npz.parts"
    parts.mkdir()
    (parts / "notes.txt").write_text("mine")  # somebody's directory: never written into, never removed
    args = ["stats", "--metadata_dir", root, "--out", stats, "--arch", "b32", "--num_samples", "20", "--num_workers",
            "1", "--no_moments", "--no_progress"]
    refused(cli(*args), "s.npz.parts", "not made by kl-filter")
    assert os.listdir(parts) == ["notes.txt"]
    os.remove(parts / "notes.txt")
    for stale in ("00000000.npz", "zzz.npz"):  # partials of another run (other parameters, a shard now gone)
        np.savez(parts / stale, provenance=np.array(json.dumps({"seed": 99})))
    line = refused(cli(*args), "00000002.npz", "row 17 has NaN")
    assert not stats.exists()
    left = sorted(os.listdir(parts)) if parts.exists() else []
    if left:  # only this pool's valid partials, counted in the message
        assert set(left) <= {"00000000.npz", "00000001.npz"} and f"{len(left)} valid statistics partial" in line
        for f in left:
            with np.load(parts / f) as z:
                assert json.loads(str(z["provenance"]))["seed"] == 0
    else:
        assert "kept" not in line
    # a fault of the whole pool (no row passes the caption filter): its partials cannot help a rerun
    de = tmp_path / "de"
    de.mkdir()
    write_shard(de, "00000000", 50, seed=0, text=["ein roter Apfel auf dem Tisch"] * 50)
    refused(cli("stats", "--metadata_dir", de, "--out", tmp_path / "d.npz", "--num_workers", "1", "--no_progress"),
            "0 rows pass the caption filter")
    assert not (tmp_path / "d.npz").exists() and not (tmp_path / "d.npz.parts").exists()


# ---- class 8: recipes ship with a regular install ----------------------------------------------------------------
def test_regular_install_ships_the_recipes_and_demo_fails_loudly_without_them(tmp_path):
    src, target, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "cwd"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:  # a copy of the checkout, so the build leaves nothing in it
        if os.path.isfile(os.path.join(REPO, f)):
            os.makedirs(src / os.path.dirname(f), exist_ok=True)
            shutil.copy2(os.path.join(REPO, f), src / f)
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "--target", target, src], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("KL_FILTER_RECIPES", None)
    py = ("import json, kl_filter.recipes as r; "
          "print(json.dumps([r.__file__, [x.name for x in r.list_recipes()], r.shipped_recipes(), "
          "r.load_recipe('kl_l14_txt_25').filter]))")
    got = subprocess.run([sys.executable, "-c", py], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    where, names, shipped, flt = json.loads(got.stdout)
    want = sorted(f[:-5] for f in os.listdir(os.path.join(REPO, "baselines")) if f.endswith(".yaml"))
    assert where.startswith(str(target)) and sorted(names) == shipped == want and flt == "kl"
    lf = subprocess.run([sys.executable, "-m", "kl_filter", "list-filters"], cwd=elsewhere, env=env,
                        capture_output=True, text=True)
    assert lf.returncode == 0 and "clip_score" in lf.stdout
    os.remove(target / "kl_filter" / "baselines" / "laion2b.yaml")  # an installation that lost a recipe
    demo = subprocess.run([sys.executable, "-m", "kl_filter", "demo", "--out", elsewhere / "d", "--rows", "100",
                           "--no_progress"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert demo.returncode == 2 and "laion2b" in demo.stderr and "recipe(s) missing" in demo.stderr, demo.stderr
    assert len(demo.stderr.strip().splitlines()) == 1 and not (elsewhere / "d").exists()


# ---- class 9: no pickled code runs -------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this creates the marker file
        return (open, (self.marker, "w"))


def test_crafted_torch_file_is_refused_and_never_runs(tmp_path, pool):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "centroids.pt"
    torch.save({"image_features": _Payload(str(marker))}, evil)
    feats = tmp_path / "in1k.pt"
    torch.save({"image_features": torch.ones(4, 768)}, feats)
    for centroids, features in ((evil, feats), (tmp_path / "c.npy", evil)):
        np.save(tmp_path / "c.npy", np.ones((8, 768), np.float32))
        refused(cli("select", "--name", "image_based", "--centroids", centroids, "--in1k_features", features,
                    "--metadata_dir", pool, "--save_path", tmp_path / "o.npy", "--no_progress"),
                str(evil), "refused", "io.open")
        assert not marker.exists() and not (tmp_path / "o.npy").exists()


def test_plain_tensors_dicts_and_numpy_arrays_still_load(tmp_path):
    torch = pytest.importorskip("torch")
    from kl_filter.core.errors import KLFilterError
    from kl_filter.core.inputs import load_array

    want = np.arange(12, dtype=np.float32).reshape(3, 4)
    torch.save(torch.from_numpy(want), tmp_path / "t.pt")
    torch.save({"image_features": torch.from_numpy(want)}, tmp_path / "d.pt")
    torch.save(want.astype(np.float16), tmp_path / "n.pt")  # DataComp's centroids: a NumPy array via torch.save
    np.save(tmp_path / "a.npy", want)
    for f in ("t.pt", "d.pt", "n.pt", "a.npy"):
        np.testing.assert_array_equal(load_array(str(tmp_path / f), "image_features"), want)
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "junk.pt").write_bytes(b"garbage" * 20)
    for f, words in (("o.npy", "not a plain .npy array"), ("junk.pt", "not a torch tensor file")):
        with pytest.raises(KLFilterError, match=words) as e:
            load_array(str(tmp_path / f), "image_features")
        assert len(str(e.value).splitlines()) == 1


# ---- class 11: the harness hands DataComp absolute, checked paths --------------------------------------------
FAKE_STEP = r'''
import json, os, sys
args = sys.argv[1:]
def val(flag):
    return args[args.index(flag) + 1]
log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.jsonl")
with open(log, "a") as f:
    f.write(json.dumps({"script": os.path.basename(__file__), "cwd": os.getcwd(), "argv": args}) + "\n")
paths = [a for a in args if not a.startswith("-") and ("/" in a or a.endswith(".npy"))]
bad = [p for p in paths if not os.path.isabs(p)]
if bad:
    sys.exit(f"relative path handed to DataComp: {bad}")
name = os.path.basename(__file__)
if name == "resharder.py":
    assert os.path.isdir(val("-i")) and os.path.isfile(val("-s"))
    os.makedirs(val("-o"), exist_ok=True)
elif name == "train.py":
    assert os.path.isdir(val("--data_dir"))
    os.makedirs(os.path.join(val("--output_dir"), val("--exp_name")), exist_ok=True)
else:
    tasks = TASKS
    with open(os.path.join(val("--train_output_dir"), "eval_results.jsonl"), "w") as f:
        for i, t in enumerate(tasks):
            f.write(json.dumps({"dataset": t, "metrics": {"main_metric": 0.5 + i / 100}}) + "\n")
'''


def _fake_datacomp(d):
    from kl_filter.apps.harness.results import GROUPS

    tasks = ["ImageNet 1k"] + [t for g in GROUPS.values() for t in g]
    tasks += [f"extra {i}" for i in range(38 - len(tasks))]
    os.makedirs(d, exist_ok=True)
    for s in ("resharder.py", "train.py", "evaluate.py"):
        with open(os.path.join(d, s), "w") as f:
            f.write(FAKE_STEP.replace("TASKS", repr(tasks)))
    return str(d)


def test_harness_with_relative_paths_runs_with_absolute_ones(tmp_path, pool):
    dc = _fake_datacomp(tmp_path / "datacomp")
    work = tmp_path / "cwd"
    _tars(work / "shards")
    (work / "evalsets").mkdir()
    np.save(work / "u.npy", np.array([(0, 1), (0, 2)], np.dtype("u8,u8")))
    env = {**os.environ, "PYTHONPATH": REPO}  # train.py runs under `python -m torch.distributed.run`
    cmd = [sys.executable, "-m", "kl_filter", "harness", "--datacomp_dir", os.path.relpath(dc, work), "--scale",
           "small", "--uids", "u.npy", "--shards_dir", "shards", "--work_dir", "runs/x", "--eval_data_dir", "evalsets"]
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    calls = [json.loads(x) for x in open(os.path.join(dc, "calls.jsonl"))]
    assert [c["script"] for c in calls] == ["resharder.py", "train.py", "evaluate.py"]
    assert all(c["cwd"] == dc for c in calls)
    res = json.loads((work / "runs" / "x" / "results.json").read_text())
    assert res["uids"] == str(work / "u.npy") and abs(res["ImageNet"] - 0.5) < 1e-9
    assert sorted(os.listdir(dc)) == ["calls.jsonl", "evaluate.py", "resharder.py", "train.py"]  # nothing else
    # missing or invalid inputs: one line before DataComp's first step
    os.remove(os.path.join(dc, "calls.jsonl"))
    for args, words in ((["--shards_dir", "nope"], ["nope", "shards directory does not exist"]),
                        (["--uids", "bad.npy"], ["bad.npy", "dtype"])):
        np.save(work / "bad.npy", np.arange(3, dtype=np.uint64))
        c = list(cmd)
        c[c.index(args[0]) + 1] = args[1]
        p = subprocess.run(c, cwd=work, env=env, capture_output=True, text=True)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert all(w in p.stderr for w in words), p.stderr
        assert not os.path.exists(os.path.join(dc, "calls.jsonl"))
