"""Nothing lost, round 3b (issue 26, finished): degenerate batches and cuts, ``--task_timeout``, recipes looked up
through ``$KL_FILTER_RECIPES``, ``score --scorer`` names and grids, read-only filesystems.

Each case gives the correct result (checked against a plain float64 computation where there is a number), or one
line with exit status 2 naming the flag, file or plugin and the remedy: no traceback, no hang, nothing written.
The Ray cases (a killed dashboard agent, a hung task on a cluster) are in tests/test_ray_engine.py.
"""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from minipool import make_minipool, unit, write_shard
from test_bad_input_files import cli, no_hang, one_line_exit_2, refused, tree


def ref_negcliploss(f, g, a=100.0):
    """s_ii − (1/2a)·[log Σ_j exp(a·s_ij) + log Σ_j exp(a·s_ji)] of one batch, float64, the whole matrix."""
    s = f.astype(np.float64) @ g.astype(np.float64).T * a
    m1, m0 = s.max(1), s.max(0)
    row = m1 + np.log(np.exp(s - m1[:, None]).sum(1))
    col = m0 + np.log(np.exp(s - m0[None, :]).sum(0))
    return np.diag(s) / a - (row + col) / (2 * a)


def column(scores_dir, name):
    return np.concatenate([pq.read_table(os.path.join(scores_dir, f), columns=[name])[name].to_numpy()
                           for f in sorted(os.listdir(scores_dir)) if f.endswith(".parquet")])


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_minipool(tmp_path_factory.mktemp("round3b") / "pool")


# ---- negCLIPLoss batches: never one row alone ------------------------------------------------------------------------
def test_equal_buckets_never_leave_a_batch_of_one_row():
    """Every (rows, size) up to 300 rows: buckets of at least min(size, 2) rows, sizes within one row; where the
    rounded count left no smaller bucket it is unchanged (the same batches as before for every other pool)."""
    from kl_filter.scorers.partition import assign_buckets, num_buckets

    rng = np.random.default_rng(0)
    for rows in range(2, 301):
        keys = [rng.integers(0, 2**63, rows, dtype=np.uint64)]
        for size in range(1, 13):
            b = num_buckets(rows, size)
            counts = np.bincount(assign_buckets(keys, None, b)[0], minlength=b)
            assert counts.min() >= min(size, 2) and counts.max() - counts.min() <= 1, (rows, size, counts)
            if rows // max(1, round(rows / size)) >= min(size, 2):
                assert b == max(1, round(rows / size)), (rows, size)
    assert num_buckets(7, 2) == 3 and num_buckets(11, 2) == 5  # rounding alone gave 4 and 6 (a 1-row bucket)


def test_batch_size_2_on_an_odd_pool_scores_every_row_against_another(tmp_path, capsys):
    """The issue's case: 7 rows, --batch_size 2. Each row's value is the mean over 2 passes of its batch's float64
    negCLIPLoss, batches of 2-3 rows (rank(hash)·3 // 7); no row scores 0 alone in a batch."""
    from kl_filter.core.uids import hex_to_u8u8
    from kl_filter.scorers.partition import assign_buckets, bucket_keys, num_buckets

    root = tmp_path / "pool"
    root.mkdir()
    write_shard(root, "00000000", 7, seed=3)
    emb = np.load(root / "00000000.npz")
    code, out, err = cli("select", "--name", "negcliploss", "--arch", "b32", "--batch_size", "2", "--num_batches",
                         "2", "--fraction", "0.5", "--logit_scale", "100", "--metadata_dir", root, "--scores_dir",
                         tmp_path / "s", "--save_path", tmp_path / "u.npy", "--no_progress", capsys=capsys)
    assert code == 0, err
    uids = hex_to_u8u8([f"{i:032x}" for i in range(7)])
    want = np.zeros(7)
    for k in range(2):
        batch = assign_buckets([bucket_keys(uids, 0, k)], None, num_buckets(7, 2))[0]
        assert sorted(np.bincount(batch)) == [2, 2, 3]
        for b in range(3):
            rows = np.flatnonzero(batch == b)
            want[rows] += ref_negcliploss(emb["b32_img"][rows], emb["b32_txt"][rows]) / 2
    got = column(tmp_path / "s", "negcliploss_b32")
    assert np.max(np.abs(got - want)) < 1e-6 and np.all(np.abs(got) > 1e-4), (got, want)


def test_a_one_row_pool_is_refused_by_negcliploss(tmp_path, capsys):
    root = tmp_path / "pool"
    root.mkdir()
    write_shard(root, "00000000", 1, seed=1)
    before = tree(tmp_path)
    code, _, err = cli("select", "--name", "negcliploss", "--arch", "b32", "--fraction", "0.5", "--metadata_dir", root,
                       "--scores_dir", tmp_path / "s", "--save_path", tmp_path / "u.npy", "--no_progress",
                       capsys=capsys)
    one_line_exit_2(code, err, "negcliploss: the pool has 1 row(s); a batch needs at least 2",
                    "give a pool of 2 rows or more")
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if k != "s/.kl-filter"} == before, after  # the new dir's marker only


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "8", None])
def test_a_bucket_size_that_is_not_a_positive_integer_is_one_line(size):
    """A third-party bucket scorer's bucket_size(): refused before any shard is read (size 0 was a
    ZeroDivisionError traceback)."""
    from types import SimpleNamespace

    from kl_filter.scorers.partition import hashed_partition

    fake = SimpleNamespace(row_counts=[10, 10], metadata_dir="pool", shards=[])
    refused(lambda: hashed_partition(fake, None, 0, 0, size, "my_scorer"),
            "my_scorer: bucket_size() must be a positive integer")


# ---- thresholds and SemDeDup parameters ------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", ["1e300", "-1e39", "3.5e38"])
def test_a_threshold_beyond_float32_is_refused(tmp_path, pool, capsys, threshold):
    """1e300 kept 0 rows correctly but printed NumPy's overflow RuntimeWarning twice (a float32 cast)."""
    code, _, err = cli("select", "--name", "clip_score", "--arch", "b32", f"--threshold={threshold}", "--metadata_dir",
                       pool, "--save_path", tmp_path / "u.npy", "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "--threshold must be within float32's range", f"got {float(threshold):g}")
    assert "RuntimeWarning" not in err and os.listdir(tmp_path) == []


def test_a_threshold_at_the_edge_of_float32_is_used(tmp_path, pool, capsys):
    code, _, err = cli("select", "--name", "clip_score", "--arch", "b32", "--threshold=-3e38", "--metadata_dir", pool,
                       "--save_path", tmp_path / "u.npy", "--no_progress", capsys=capsys)
    assert code == 0 and "Warning" not in err, err
    assert len(np.load(tmp_path / "u.npy")) == 600


@pytest.fixture(scope="module")
def duplicates(tmp_path_factory):
    """Two shards of 60 rows with the same embeddings: every row of shard 1 an exact duplicate of one of shard 0."""
    root = tmp_path_factory.mktemp("dups") / "pool"
    root.mkdir()
    rng = np.random.default_rng(0)
    emb = {k: unit(rng, 60, d) for k, d in [("b32_img", 512), ("b32_txt", 512), ("l14_img", 768), ("l14_txt", 768)]}
    write_shard(root, "00000000", 60, 0, 0, **emb)
    write_shard(root, "00000001", 60, 1, 60, **emb)
    return str(root)


@pytest.mark.parametrize("eps, warned, kept", [("1e-9", True, None), ("1e-4", False, 60)])
def test_semdedup_eps_within_float32_rounding_warns(tmp_path, duplicates, capsys, caplog, eps, warned, kept):
    """Exact duplicates score 1 ± 6e-7 in float32 (measured): at eps 1e-9 some are dropped and some kept by
    rounding, so the run says so in one warning; the subset is still exactly maxsim <= 1 − eps on the column.
    At eps 1e-4 every duplicate goes, silently."""
    from kl_filter.scorers.semdedup import duplicate_threshold

    code, _, err = cli("select", "--name", "semdedup", "--arch", "b32", "--eps", eps, "--num_clusters", "4",
                       "--metadata_dir", duplicates, "--scores_dir", tmp_path / "s", "--save_path",
                       tmp_path / "u.npy", "--no_progress", capsys=capsys)
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if "within float32 rounding of a cosine" in r.getMessage()]
    assert len(said) == int(warned) and (not warned or "use --eps 1e-4 or more" in said[0]), said
    maxsim = column(tmp_path / "s", "semdedup_b32_maxsim")
    assert len(np.load(tmp_path / "u.npy")) == int((maxsim <= np.float32(duplicate_threshold(float(eps)))).sum())
    if kept is not None:
        assert len(np.load(tmp_path / "u.npy")) == kept


def test_semdedup_with_about_one_row_a_cluster_warns(tmp_path, capsys, caplog):
    root = tmp_path / "pool"
    make_minipool(root, shards=2, n=20)
    code, _, err = cli("select", "--name", "semdedup", "--arch", "b32", "--eps", "0.01", "--num_clusters", "40",
                       "--metadata_dir", root, "--scores_dir", tmp_path / "s", "--save_path", tmp_path / "u.npy",
                       "--no_progress", capsys=capsys)
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if "alone in their k-means cluster" in r.getMessage()]
    assert len(said) == 1 and "(--num_clusters 40)" in said[0] and "use fewer clusters" in said[0], said
    assert len(np.load(tmp_path / "u.npy")) == 40  # no duplicates in this pool: all kept, as the column says
    assert (column(tmp_path / "s", "semdedup_b32_maxsim") <= 0.99).all()


# ---- recipes: $KL_FILTER_RECIPES and the recipe files it leads to ----------------------------------------------------
def test_recipe_path_entries_that_are_not_directories_are_skipped_with_a_warning(tmp_path, pool, capsys, caplog,
                                                                                monkeypatch):
    """A FIFO (never opened: no hang), a regular file, a missing directory and empty entries (``::``) in
    $KL_FILTER_RECIPES: the shipped recipe runs, one warning per odd entry."""
    import kl_filter.recipes as recipes

    fifo, plain = str(tmp_path / "fifo"), str(tmp_path / "plain")
    os.mkfifo(fifo)
    open(plain, "w").write("name: clip_score\n")
    monkeypatch.setattr(recipes, "_warned", set())
    monkeypatch.setenv("KL_FILTER_RECIPES", os.pathsep.join([fifo, "", plain, str(tmp_path / "gone"), ""]))
    code, out, err = no_hang(lambda: cli("run", "clip_score_l14_30", "--metadata_dir", pool, "--save_path",
                                         tmp_path / "u.npy", "--no_progress", capsys=capsys), fifos=[fifo])
    assert code == 0 and "kept 181 of 600" in out, err
    said = sorted(r.getMessage() for r in caplog.records if r.name == "kl_filter.recipes")
    assert said == sorted([f"$KL_FILTER_RECIPES entry {fifo!r} is not a directory: skipped",
                           f"$KL_FILTER_RECIPES entry {str(tmp_path / 'gone')!r} does not exist: skipped",
                           f"$KL_FILTER_RECIPES entry {plain!r} is not a directory: skipped"]), said


@pytest.mark.parametrize("kind, words", [
    ("loop", "recipe: cannot stat (Too many levels of symbolic links)"),
    ("dangling", "recipe: dangling symlink (points to"),
    ("directory", "recipe is a directory, not a regular file"),
    ("fifo", "recipe is a FIFO"),
])
def test_a_recipe_in_the_recipe_path_that_is_not_a_file(tmp_path, pool, capsys, monkeypatch, kind, words):
    """Found by name in $KL_FILTER_RECIPES and refused by what it is (a symlink loop and a dangling link said
    "no such recipe" before, as if the file were not there)."""
    d = tmp_path / "recipes"
    d.mkdir()
    p = str(d / "mine.yaml")
    if kind == "loop":
        os.symlink(str(d / "other.yaml"), p)
        os.symlink(p, str(d / "other.yaml"))
    elif kind == "dangling":
        os.symlink(str(d / "gone.yaml"), p)
    elif kind == "directory":
        os.mkdir(p)
    else:
        os.mkfifo(p)
    monkeypatch.setenv("KL_FILTER_RECIPES", str(d))
    code, _, err = no_hang(lambda: cli("run", "mine", "--metadata_dir", pool, "--save_path", tmp_path / "u.npy",
                                       "--no_progress", capsys=capsys), fifos=[p] if kind == "fifo" else [])
    one_line_exit_2(code, err, p, words)
    assert not os.path.exists(tmp_path / "u.npy")


@pytest.mark.parametrize("name, words", [
    ("", "a recipe is a YAML file or a recipe name, got an empty string"),
    ("x\ny\x1b[31m", "x\\ny\\x1b[31m: no such recipe (looked in"),
    ("../../no/such", "../../no/such: no such recipe"),
])
def test_odd_recipe_names_are_one_line(tmp_path, pool, capsys, name, words):
    """A name with a newline printed two lines (and a terminal escape as is): control characters are escaped."""
    code, _, err = cli("run", name, "--metadata_dir", pool, "--save_path", tmp_path / "u.npy", "--no_progress",
                       capsys=capsys)
    one_line_exit_2(code, err, words)


def test_an_unlistable_recipe_directory_is_one_line(tmp_path, monkeypatch):
    import kl_filter.recipes as recipes

    d = tmp_path / "recipes"
    d.mkdir()
    monkeypatch.setenv("KL_FILTER_RECIPES", str(d))
    real = os.listdir

    def listdir(p="."):
        if str(p) == str(d):
            raise PermissionError(13, "Permission denied")
        return real(p)

    monkeypatch.setattr(recipes.os, "listdir", listdir)
    refused(recipes.list_recipes, str(d), "cannot list the recipe directory (Permission denied)")


def test_an_unreadable_installation_record_still_names_the_shipped_recipes(monkeypatch):
    import importlib.metadata

    import kl_filter.recipes as recipes

    want = recipes.shipped_recipes()
    assert "clip_score_l14_30" in want

    def broken(name):
        raise ValueError("RECORD: line 3: expected 3 fields")

    monkeypatch.setattr(importlib.metadata, "files", broken)
    assert recipes.shipped_recipes() == want


# ---- score --scorer ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "KL", "a\nb", "../../etc", "kl_filter.scorers.kl:KLScorer", "clip_score"])
def test_score_with_an_unknown_scorer_is_one_line_naming_the_flag(tmp_path, pool, capsys, name):
    code, _, err = cli("score", "--metadata_dir", pool, "--out", tmp_path / "s", "--scorer", name, "--no_progress",
                       capsys=capsys)
    one_line_exit_2(code, err, f"unknown --scorer {name!r}", "known: iwl, kl, negcliploss, normsim, semdedup, vas")
    assert os.listdir(tmp_path) == []


def test_score_grid_is_bounded_before_building_scorers(tmp_path, pool, capsys):
    """399 × 400 values built 160,000 scorers (minutes, before any check); now refused at once."""
    t = time.perf_counter()
    code, _, err = cli("score", "--metadata_dir", pool, "--out", tmp_path / "s", "--scorer", "negcliploss",
                       "--batch_size", *map(str, range(2, 401)), "--num_batches", *map(str, range(1, 401)),
                       "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "--scorer negcliploss: the flags ask for 159,600 combinations "
                               "(399 --batch_size x 400 --num_batches); at most 1,000 in one command")
    assert time.perf_counter() - t < 10 and os.listdir(tmp_path) == []


# ---- a read-only filesystem -------------------------------------------------------------------------------------------
def _read_only_mount_works() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    flags = [] if os.geteuid() == 0 else ["-r"]
    p = subprocess.run(["unshare", *flags, "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True)
    return p.returncode == 0


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs a mount namespace (unshare -m) to mount a "
                                                          "read-only tmpfs")
def test_outputs_on_a_read_only_filesystem(tmp_path, pool):
    """In a private mount namespace: a tmpfs with a scores dir made by `score`, then remounted read-only. Reading
    those scores works; every output there (scores, UID file, statistics, report) is one line, exit 2."""
    ro, out = tmp_path / "ro", tmp_path / "out"
    ro.mkdir()
    out.mkdir()
    kl = f"--name kl --arch b32 --mode kl --target txt --num_samples 50 --fraction 0.5 --metadata_dir {pool}"
    km = "python -m kl_filter"
    script = f"""
set -e
mount -t tmpfs tmpfs {ro}
mkdir {ro}/scores
{km} score --metadata_dir {pool} --out {ro}/done --scorer kl --arch b32 --mode kl --target txt --num_samples 50 \
   --no_progress >/dev/null 2>&1
mount -o remount,ro {ro}
set +e
for cmd in "select {kl} --scores_dir {ro}/done --save_path {out}/read.npy" \
           "select --name negcliploss --arch b32 --fraction 0.5 --metadata_dir {pool} --scores_dir {ro}/scores \
                   --save_path {out}/n.npy" \
           "select --name clip_score --arch b32 --fraction 0.5 --metadata_dir {pool} --save_path {ro}/u.npy" \
           "stats --metadata_dir {pool} --out {ro}/s.npz --arch b32 --num_samples 20" \
           "select {kl} --scores_dir {ro}/done --save_path {out}/again.npy --overwrite" \
           "inspect --metadata_dir {pool} --out {ro}/report"; do
  {km} $cmd --no_progress >/dev/null 2>{out}/err
  echo "status=$? $(grep -c . {out}/err) $(grep -c Traceback {out}/err) $(tail -n 1 {out}/err)"
done
"""
    flags = [] if os.geteuid() == 0 else ["-r"]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(["unshare", *flags, "-m", "bash", "-c", script], capture_output=True, text=True, env=env,
                       timeout=300)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("status=")]
    assert len(lines) == 6, p.stdout + p.stderr
    assert lines[0].startswith("status=0 0 0"), lines[0]  # reading the read-only scores: fine
    for ln in lines[1:]:
        assert ln.startswith("status=2 1 0 kl-filter: error: ") and "Read-only file system" in ln, ln
    assert sorted(os.listdir(out)) == ["err", "read.npy", "read.npy.json"]


# ---- --task_timeout: a hung plugin is stopped and named ---------------------------------------------------------------
HANG_PLUGINS = '''
import os
import signal
import threading
import time

import numpy as np
from kl_filter import Filter, Keep, Scorer

RELEASE = threading.Event()  # the test lets a stuck thread go when it is done


def _stuck():
    if os.environ.get("KL_HANG_PIDFILE"):  # where a test looks for the process that hangs
        with open(os.environ["KL_HANG_PIDFILE"], "a") as f:
            f.write(f"{os.getpid()}\\n")
    while not RELEASE.is_set():
        time.sleep(0.01)


class Hang(Filter):
    """Hangs on the 40-row shard."""

    name = "hang"
    columns = ("text",)

    def score(self, shard):
        if shard.num_rows == 40:
            _stuck()
        return {"ok": np.ones(shard.num_rows, bool)}

    def rules(self):
        return [Keep("ok")]


class HangProcesses(Hang):
    name = "hang_processes"
    parallel = "processes"


class CrashProcesses(Hang):
    name = "crash_processes"
    parallel = "processes"

    def score(self, shard):
        if shard.num_rows == 40:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"ok": np.ones(shard.num_rows, bool)}


class HangScorer(Scorer):
    name = "hang_scorer"
    columns = ("clip_b32_similarity_score",)

    def outputs(self):
        return ("hang_col",)

    def compute(self, shard, stats, device="cpu"):
        if shard.num_rows == 40:
            _stuck()
        return {"hang_col": np.asarray(shard["clip_b32_similarity_score"], np.float32)}
'''


def install_hang_plugins(site) -> None:
    """The distribution ``kl-hang-plugins`` (module + dist-info, as pip lays it out) declaring the plugins above."""
    info = site / "kl_hang_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "kl_hang_plugins.py").write_text(HANG_PLUGINS)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kl-hang-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[kl_filter.filters]\nhang = kl_hang_plugins:Hang\nhang_processes = kl_hang_plugins:HangProcesses\n"
        "crash_processes = kl_hang_plugins:CrashProcesses\n[kl_filter.scorers]\nhang_scorer = kl_hang_plugins:HangScorer\n")


def hang_pool(root) -> str:
    os.makedirs(root)
    for i, n in enumerate((30, 40, 30)):
        write_shard(root, f"{i:08d}", n, seed=i, uid_start=100 * i)
    return str(root)


@pytest.fixture
def hang_plugins(tmp_path, monkeypatch):
    """The plugins installed, fresh filter and scorer registries that see them; stuck threads released after."""
    import importlib

    from kl_filter.core.registry import Registry
    from kl_filter.filters import registry as freg
    from kl_filter.scorers import registry as sreg

    site = tmp_path / "site"
    install_hang_plugins(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "kl_hang_plugins", raising=False)  # a released one from an earlier test
    importlib.invalidate_caches()
    for mod, attr in ((freg, "FILTERS"), (sreg, "SCORERS")):
        reg = getattr(mod, attr)
        builtins = {k: v if isinstance(v, str) else f"{v.__module__}:{v.__qualname__}"
                    for k, v in reg._targets.items()}
        builtins = {k: v for k, v in builtins.items() if v.startswith("kl_filter.")}
        monkeypatch.setattr(mod, attr, Registry(reg.kind, reg.group, builtins))
    yield hang_pool(tmp_path / "pool")
    if "kl_hang_plugins" in sys.modules:  # (before monkeypatch restores sys.modules)
        sys.modules["kl_hang_plugins"].RELEASE.set()


@pytest.mark.parametrize("name, kind, workers", [("hang", "filter", "2"), ("hang_processes", "filter", "2"),
                                                  ("hang_scorer", "scorer", "1")])
def test_a_hung_plugin_is_stopped_and_named(hang_plugins, tmp_path, capsys, name, kind, workers):
    """Threads (the stuck one abandoned: the command then leaves with os._exit), worker processes (the stuck one
    ended by its watchdog) and a scorer's compute(): one line naming the plugin, its distribution and the line,
    within a few seconds of the bound; nothing written."""
    t = time.perf_counter()
    cut = ["--fraction", "0.5"] if kind == "scorer" else []
    code, _, err = no_hang(lambda: cli("select", "--name", name, *cut, "--metadata_dir", hang_plugins, "--save_path",
                                       tmp_path / "u.npy", "--task_timeout", "0.5", "--num_workers", workers,
                                       "--no_progress", capsys=capsys), timeout=60)
    one_line_exit_2(code, err, f"{kind} {name!r} (kl_hang_plugins.", "distribution kl-hang-plugins)",
                    "ran past --task_timeout 0.5 s (stuck at kl_hang_plugins.py:",
                    "in compute())" if kind == "scorer" else "in score())",
                    "fix or remove the plugin, or raise --task_timeout")
    assert time.perf_counter() - t < 30
    assert sorted(os.listdir(tmp_path)) == ["pool", "site"]


def test_a_released_thread_writes_nothing_late(hang_plugins, tmp_path, capsys):
    """The library caller's view: the stuck thread lingers until the plugin returns, and what it returns then is
    discarded (no file appears after the error)."""
    code, _, err = cli("select", "--name", "hang", "--metadata_dir", hang_plugins, "--save_path",
                       tmp_path / "u.npy", "--task_timeout", "0.3", "--num_workers", "1", "--no_progress",
                       capsys=capsys)
    assert code == 2, err
    sys.modules["kl_hang_plugins"].RELEASE.set()
    time.sleep(0.5)
    assert sorted(os.listdir(tmp_path)) == ["pool", "site"]


def test_a_crashing_worker_process_is_one_line(hang_plugins, tmp_path, capsys):
    """A plugin that kills its worker process (a segfault, the OOM killer) was a BrokenProcessPool traceback."""
    code, _, err = cli("select", "--name", "crash_processes", "--metadata_dir", hang_plugins,
                       "--save_path", tmp_path / "u.npy", "--num_workers", "2", "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "a worker process of 'crash_processes: score' died", "rerun to resume")
    assert sorted(os.listdir(tmp_path)) == ["pool", "site"]


@pytest.mark.parametrize("value, words", [("0", "positive number of seconds, got 0.0"),
                                          ("-1", "got -1.0"), ("nan", "got nan"), ("inf", "got inf"),
                                          ("1e300", "must be at most 9.223e+09 s, got 1e+300")])
def test_task_timeout_values(tmp_path, pool, capsys, value, words):
    """1e300 overflowed the watchdog's timer in its own thread (a traceback there, and no bound at all)."""
    code, _, err = cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.5", "--metadata_dir", pool,
                       "--save_path", tmp_path / "u.npy", f"--task_timeout={value}", "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "--task_timeout", words)
    assert os.listdir(tmp_path) == []


def test_a_bound_that_is_not_reached_changes_nothing(tmp_path, pool, capsys):
    """The same bytes with and without --task_timeout (threads; a worker-process filter; a bucket scorer)."""
    runs = [("clip_score", "--arch", "b32", "--fraction", "0.3"), ("laion2b",),
            ("negcliploss", "--arch", "b32", "--fraction", "0.3", "--batch_size", "100", "--num_batches", "2")]
    for args in runs:
        outs = []
        for extra in ([], ["--task_timeout", "120"]):
            save = tmp_path / f"{args[0]}{len(extra)}.npy"
            code, _, err = cli("select", "--name", *args, "--metadata_dir", pool, "--save_path", save,
                               "--scores_dir", tmp_path / f"s{len(extra)}", "--num_workers", "2", "--no_progress",
                               *extra, capsys=capsys)
            assert code == 0, err
            outs.append(save.read_bytes())
        assert outs[0] == outs[1], args


def test_the_command_leaves_at_once_after_a_timeout(tmp_path):
    """End to end through ``python -m kl_filter``: the thread stuck in the plugin does not keep the process alive
    (exit status 2 within seconds of the bound)."""
    site = tmp_path / "site"
    install_hang_plugins(site)
    pool = hang_pool(tmp_path / "pool")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), REPO, os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "kl_filter", "select", "--name", "hang", "--metadata_dir", pool, "--save_path", tmp_path / "u.npy", "--task_timeout", "1",
                        "--no_progress"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("kl-filter: error: filter 'hang'"), p.stderr
    assert time.perf_counter() - t < 60 and not os.path.exists(tmp_path / "u.npy")


# ---- URLs and worker counts -------------------------------------------------------------------------------------------
def test_a_pool_inside_a_zip_archive(tmp_path, pool, capsys):
    """fsspec's chain form ``zip://inner::outer``: a pool in a zip reads as the pool (the same UID file); a file that
    is not a zip is one line (before, any ``zip://x::FILE`` opened a zip archive on no file: 'Is a directory: .')."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "p.zip", "w") as z:
        for f in sorted(os.listdir(pool)):
            z.write(os.path.join(pool, f), f"pool/{f}")
    outs = []
    for src in (pool, f"zip://pool::{tmp_path / 'p.zip'}"):
        save = tmp_path / f"u{len(outs)}.npy"
        code, _, err = cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--metadata_dir",
                           src, "--save_path", save, "--no_progress", capsys=capsys)
        assert code == 0, err
        outs.append(save.read_bytes())
    assert outs[0] == outs[1]
    code, _, err = cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--metadata_dir",
                       f"zip://pool::{pool}/00000000.parquet", "--save_path", tmp_path / "x.npy", "--no_progress",
                       capsys=capsys)
    one_line_exit_2(code, err, "cannot open (File is not a zip file)")
    code, _, err = cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--metadata_dir",
                       f"zip://pool::nosuch://x", "--save_path", tmp_path / "x.npy", "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "unknown protocol 'nosuch'")
    assert not os.path.exists(tmp_path / "x.npy")


@pytest.mark.parametrize("command", ["stats", "score"])
def test_no_workers_is_refused_by_every_command(tmp_path, pool, capsys, command):
    """`stats --num_workers 0` ran (with one worker) while select refused it."""
    out = tmp_path / ("s.npz" if command == "stats" else "s")
    code, _, err = cli(command, "--metadata_dir", pool, "--out", out, "--arch", "b32", "--num_workers", "0",
                       "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "--num_workers must be >= 1, got 0")
    assert os.listdir(tmp_path) == []


# ---- a key given twice: the loaders kept the last, silently ----------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ("name: clip_score\nparams: {arch: l14, fraction: 0.3}\nname: laion2b\n", "key 'name' appears twice in one "
                                                                               "mapping (lines 1 and 3)"),
    ("name: clip_score\nparams:\n  arch: l14\n  fraction: 0.3\n  fraction: 0.9\n", "key 'fraction' appears twice "
                                                                                    "in one mapping (lines 4 and 5)"),
    ("cuts:\n  - {score: {name: normsim}, fraction: 0.1, fraction: 0.2}\n", "key 'fraction' appears twice in one "
                                                                            "mapping (line 2)"),
], ids=["name", "param", "cut"])
def test_a_recipe_key_given_twice_is_refused(tmp_path, pool, capsys, text, words):
    """`name: clip_score` ... `name: laion2b` ran laion2b (the loader keeps the last key), silently."""
    r = tmp_path / "r.yaml"
    r.write_text(text)
    code, _, err = cli("run", r, "--metadata_dir", pool, "--save_path", tmp_path / "u.npy", "--no_progress",
                       capsys=capsys)
    one_line_exit_2(code, err, f"{r}: recipe: {words}: which one is meant?")
    assert not os.path.exists(tmp_path / "u.npy")


def test_yaml_keys_that_only_look_alike_and_merges_load():
    from kl_filter.core.inputs import parse_yaml

    assert parse_yaml("1: a\n'1': b\nx: {k: 1}\ny: {k: 2}\n", "r", "recipe") == {1: "a", "1": "b", "x": {"k": 1},
                                                                              "y": {"k": 2}}
    assert parse_yaml("b: &b {x: 1, y: 1}\nc:\n  <<: *b\n  x: 2\n", "r", "recipe")["c"] == {"x": 2, "y": 1}


def test_a_json_key_given_twice_is_refused(tmp_path):
    """embeddings.json with `"logit_scale": 14.3, "logit_scale": 100` used 100, silently."""
    from kl_filter.pool import Pool

    root = make_minipool(tmp_path / "pool", shards=1, n=20)
    (tmp_path / "pool" / "embeddings.json").write_text(
        '{"families": {"l14": {"logit_scale": 14.3, "model": "ViT-L-14", "logit_scale": 100}}}')
    refused(lambda: Pool(root).temperatures, "embeddings.json: embeddings manifest is not valid JSON (key "
                                             "'logit_scale' appears twice in one object: which one is meant?)")


def test_a_column_stored_with_a_one_row_batch_is_recomputed(tmp_path, capsys):
    """A negCLIPLoss column stored at --batch_size 2 before batches of one row were ruled out (its provenance
    without ``batch_rows``, a row scored 0 alone) is not reused: the next run recomputes it. Other batch sizes
    keep their provenance, so their stored columns stay valid."""
    import json

    import pyarrow as pa

    from kl_filter.scorers.negcliploss import NegCLIPLossScorer
    from kl_filter.stages.scores import META_KEY

    root = tmp_path / "pool"
    root.mkdir()
    write_shard(root, "00000000", 7, seed=3)
    args = ("select", "--name", "negcliploss", "--arch", "b32", "--batch_size", "2", "--num_batches", "2",
            "--fraction", "0.5", "--logit_scale", "100", "--metadata_dir", root, "--scores_dir", tmp_path / "s",
            "--no_progress")
    assert cli(*args, "--save_path", tmp_path / "u1.npy", capsys=capsys)[0] == 0
    good = column(tmp_path / "s", "negcliploss_b32")
    path = tmp_path / "s" / "00000000.parquet"
    t = pq.read_table(path)
    meta = json.loads(t.schema.metadata[META_KEY])
    assert meta["columns"]["negcliploss_b32"]["batch_rows"] == "2-3"
    del meta["columns"]["negcliploss_b32"]["batch_rows"]  # as an older kl-filter stored it, with its 1-row batch
    old = t.set_column(t.schema.get_field_index("negcliploss_b32"), "negcliploss_b32",
                       pa.array(np.where(np.arange(7) == 0, 0.0, good).astype(np.float32)))
    pq.write_table(old.replace_schema_metadata({**t.schema.metadata, META_KEY: json.dumps(meta).encode()}), path)
    assert column(tmp_path / "s", "negcliploss_b32")[0] == 0
    assert cli(*args, "--save_path", tmp_path / "u2.npy", capsys=capsys)[0] == 0
    assert np.array_equal(column(tmp_path / "s", "negcliploss_b32"), good)
    assert np.array_equal(np.load(tmp_path / "u1.npy"), np.load(tmp_path / "u2.npy"))
    other = NegCLIPLossScorer("b32", batch_size=3, logit_scale=100.0)
    assert "batch_rows" not in other.provenance("negcliploss_b32", None)
