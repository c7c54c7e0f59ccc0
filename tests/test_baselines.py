"""DataComp's baselines give exactly the uid set of DataComp's written rules, recomputed here plainly
with pandas, gcld3 and fastText (docs/selection.md#datacomps-baselines), on a synthetic pool."""

import glob

import gcld3
import numpy as np
import pandas as pd
import pytest

from conftest import run_cli


def load(pool, columns):
    return pd.concat([pd.read_parquet(p, columns=columns) for p in sorted(glob.glob(f"{pool}/*.parquet"))],
                     ignore_index=True)


def as_set(npy):
    arr = np.load(npy)
    assert arr.dtype == np.dtype("u8,u8")
    assert (np.sort(arr) == arr).all()
    return {f"{a:016x}{b:016x}" for a, b in arr.tolist()}


def select(tmp_path, pool, *flags):
    out = tmp_path / "subset.npy"
    run_cli("select", *flags, "--metadata_dir", pool, "--save_path", out, "--no_progress", check=True)
    return as_set(out)


@pytest.mark.parametrize("arch", ["b32", "l14"])
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.75])
def test_clip_score_fraction(synth_dir, tmp_path, arch, fraction):
    df = load(synth_dir, ["uid", f"clip_{arch}_similarity_score"])
    key = df[f"clip_{arch}_similarity_score"].values
    threshold = -np.sort(-key)[int(len(df) * fraction)]  # DataComp's get_threshold
    want = set(df.uid[df[f"clip_{arch}_similarity_score"] >= threshold])
    assert select(tmp_path, synth_dir, "--name", "clip_score", "--arch", arch, "--fraction", str(fraction)) == want


def test_clip_score_threshold(synth_dir, tmp_path):
    df = load(synth_dir, ["uid", "clip_l14_similarity_score"])
    want = set(df.uid[df.clip_l14_similarity_score >= 0.243])
    got = select(tmp_path, synth_dir, "--name", "clip_score", "--arch", "l14", "--threshold", "0.243")
    assert got == want and 0 < len(got) < len(df)


def test_no_filter(synth_dir, tmp_path):
    assert select(tmp_path, synth_dir, "--name", "no_filter") == set(load(synth_dir, ["uid"]).uid)


def test_laion2b(synth_dir, tmp_path):
    df = load(synth_dir, ["uid", "text", "clip_b32_similarity_score"])
    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    lang = df.text.apply(lambda t: det.FindLanguage(text=t.replace("\n", " ")).language)
    want = set(df.uid[(lang == "en") & (df.clip_b32_similarity_score >= 0.28)])
    got = select(tmp_path, synth_dir, "--name", "laion2b")
    assert got == want and 0 < len(got) < len(df)


def test_basic_filter(synth_dir, tmp_path):
    from kl_filter.text.langid import _fasttext_model, default_fasttext_path

    model = _fasttext_model(default_fasttext_path())  # the same lid.176 model, through fastText's own API
    df = load(synth_dir, ["uid", "text", "original_width", "original_height"])
    labels = df.text.apply(lambda t: model.predict(t.replace("\n", " "))[0])
    lang = labels.apply(lambda got: got[0].split("__label__")[1] if got else "")
    words = df.text.apply(lambda t: len(t.split()))
    chars = df.text.apply(len)
    lo = np.minimum(df.original_width, df.original_height)
    hi = np.maximum(df.original_width, df.original_height)
    mask = (lang == "en") & (words > 2) & (chars > 5) & (lo >= 200) & (hi / lo <= 3.0)
    got = select(tmp_path, synth_dir, "--name", "basic_filter")
    assert got == set(df.uid[mask]) and 0 < len(got) < len(df)


def test_sidecar_records_the_run(synth_dir, tmp_path):
    import json

    out = tmp_path / "c.npy"
    run_cli("run", "clip_score_l14_30", "--metadata_dir", synth_dir, "--save_path", out, "--no_progress", check=True)
    side = json.loads((tmp_path / "c.npy.json").read_text())
    df = load(synth_dir, ["clip_l14_similarity_score"])
    thr = -np.sort(-df.clip_l14_similarity_score.values)[int(len(df) * 0.3)]
    assert side["recipe"] == "clip_score_l14_30" and side["params"] == {"arch": "l14", "fraction": 0.3, "threshold": None}
    assert side["rules"][0]["computed_threshold"] == float(thr)
    assert side["kept"] == len(np.load(out)) == int((df.clip_l14_similarity_score >= thr).sum())
    assert side["pool_rows"] == 20_000 and len(side["pool_fingerprint"]) == 16 and side["seed"] == 0
