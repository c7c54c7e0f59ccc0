"""A recipe of several filters keeps exactly the intersection of what each keeps alone (every cut over the whole
pool, refine steps ANDed), computing a shared score column once."""

import json

import numpy as np

from conftest import run_cli
from minipool import make_minipool

RECIPE = """# D_KL top half intersected with the LAION-2B rule (B/32 >= 0.28 and gcld3 English)
name: all_of
params:
  filters:
    - {name: kl, params: {arch: b32, fraction: 0.5, num_samples: 64}}
    - {name: laion2b}
    - {name: kl, params: {arch: b32, fraction: 0.6, num_samples: 64}}
"""


def test_all_of_is_the_intersection(tmp_path):
    pool = make_minipool(tmp_path / "pool", shards=3, n=400)
    (tmp_path / "both.yaml").write_text(RECIPE)
    common = ["--metadata_dir", pool, "--scores_dir", tmp_path / "s", "--no_progress"]
    run_cli("run", tmp_path / "both.yaml", *common, "--save_path", tmp_path / "both.npy", check=True)
    run_cli("select", "--name", "kl", "--arch", "b32", "--fraction", "0.5", "--num_samples", "64", *common,
            "--save_path", tmp_path / "kl.npy", check=True)
    run_cli("select", "--name", "laion2b", *common, "--save_path", tmp_path / "laion.npy", check=True)
    both, kl, laion = (np.load(tmp_path / f) for f in ("both.npy", "kl.npy", "laion.npy"))
    assert 0 < len(both) and np.array_equal(both, np.intersect1d(kl, laion))
    side = json.loads((tmp_path / "both.npy.json").read_text())
    assert [s["kind"] for s in side["removed"]] == ["rule", "rule", "rule", "refine"]
    assert side["removed"][-1]["step"] == "english (gcld3)"
    assert side["scores"]["columns"] == ["kl_b32_txt"] and side["params"]["filters"][1] == {"name": "laion2b",
                                                                                           "params": {}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: all_of\nparams:\n  filters: [{name: kl, params: {fraction: 2}}, {name: no_filter}]\n")
    p = run_cli("run", bad, "--metadata_dir", pool, "--save_path", tmp_path / "x.npy")
    assert p.returncode == 2 and p.stderr.strip() == f"kl-filter: error: {bad}: --fraction must be in (0, 1], got 2.0"
