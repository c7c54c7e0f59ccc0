"""``kl-filter demo`` (the README's first command): pool, recipe table and inspection report, with real values."""

import glob
import json
import os

import numpy as np
import pandas as pd

from conftest import run_cli


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    p = run_cli("demo", "--out", out, "--rows", 6000, "--shards", 2, "--seed", 1, "--num_workers", 2, "--no_progress",
                "--recipes", "no_filter", "clip_score_l14_30", "laion2b", "kl_l14_txt_25", check=True)
    res = json.load(open(out / "demo_results.json"))
    assert res["pool"] == {"rows": 6000, "shards": 2, "seed": 1}
    got = {r["recipe"]: r for r in res["results"]}
    df = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(str(out / "pool" / "*.parquet")))])
    assert len(df) == 6000 and got["no_filter"]["kept"] == 6000
    s = np.sort(df.clip_l14_similarity_score.values.astype(np.float64))[::-1]
    want = int((df.clip_l14_similarity_score.values >= s[int(6000 * 0.3)]).sum())  # DataComp's threshold rule
    assert got["clip_score_l14_30"]["kept"] == want == 1801
    assert got["kl_l14_txt_25"]["kept"] >= 1500
    assert "| clip_score_l14_30 | 1,801 | 30.02% |" in p.stdout
    # the report of the demo's main recipes, from the UID files the demo wrote
    fig = json.load(open(out / "report" / "figures.json"))
    assert list(fig["subsets"]) == ["clip_score_l14_30", "laion2b", "kl_l14_txt_25"]
    for name, sub in fig["subsets"].items():
        assert sub["kept"] == got[name]["kept"] == len(np.load(out / "uids" / f"{name}.npy"))
    assert fig["columns"]["clip_l14_similarity_score"]["thresholds"][0]["value"] == np.float32(s[int(6000 * 0.3)])
    assert os.path.exists(out / "report" / "index.html") and "Inspection report:" in p.stdout
