"""The stages the runner plans from a filter's declarations: score columns shared across filters and commands
through one --scores_dir (reused only when their provenance matches), and a third-party scorer."""

import json

import numpy as np
import pyarrow.parquet as pq

from conftest import run_cli
from kl_filter import Filter, Scorer, Top, build_filter
from kl_filter.scorers.registry import SCORERS
from kl_filter.stages.scores import META_KEY
from kl_filter.runner import RunContext, run_filter
from minipool import TEXTS, make_minipool


def _columns(path):
    meta = json.loads(pq.read_schema(path).metadata[META_KEY])
    return meta["columns"]


def test_score_columns_are_shared_and_reused_by_provenance(tmp_path):
    pool = make_minipool(tmp_path / "pool", shards=3, n=400)
    scores = tmp_path / "scores"
    run_cli("stats", "--metadata_dir", pool, "--out", scores / "stats.npz", "--arch", "b32", "--num_samples", "64",
            "--no_progress", check=True)
    run_cli("score", "--metadata_dir", pool, "--stats", scores / "stats.npz", "--out", scores, "--modes", "kl",
            "centered", "--arch", "b32", "--target", "txt", "--no_progress", check=True)
    before = _columns(scores / "00000000.parquet")
    assert set(before) == {"kl_b32_txt", "centered_b32_txt"}

    ctx = RunContext(num_workers=2, scores_dir=str(scores), stats=str(scores / "stats.npz"))
    side = run_filter(build_filter("kl", {"mode": "centered", "arch": "b32", "fraction": 0.3}), pool, None, ctx)
    assert side["scores"] == {"columns": ["centered_b32_txt"], "scores_dir": str(scores), "shards_computed": 0,
                              "shards_reused": 3, "temperature": {}}  # D_C does not depend on the temperature
    # another logit scale changes D_KL (recomputed) but not D_C (kept as it was, with its provenance)
    old = pq.read_table(scores / "00000000.parquet")
    side = run_filter(build_filter("kl", {"arch": "b32", "fraction": 0.3, "logit_scale": 50.0}), pool, None, ctx)
    assert side["scores"]["shards_computed"] == 3
    after = _columns(scores / "00000000.parquet")
    assert after["centered_b32_txt"] == before["centered_b32_txt"] and after["kl_b32_txt"]["logit_scale"] == 50.0
    new = pq.read_table(scores / "00000000.parquet")
    assert new.column("centered_b32_txt").equals(old.column("centered_b32_txt"))
    assert not new.column("kl_b32_txt").equals(old.column("kl_b32_txt"))


class CaptionLength(Scorer):
    """Characters per caption (a third-party scorer)."""

    name = "caption_length"
    columns = ("text",)

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def outputs(self):
        return ("caption_length",)

    def compute(self, shard, stats, device="cpu"):
        return {"caption_length": np.array([len(t) * self.scale for t in shard["text"].to_pylist()], np.float32)}


class LongestCaptions(Filter):
    name = "longest_captions"

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction

    def scorers(self):
        return (SCORERS.build("caption_length"),)

    def score(self, shard):
        return {"len": shard["caption_length"]}

    def rules(self):
        return [Top("len", fraction=self.fraction)]


def test_third_party_scorer_runs_as_a_stage(tmp_path):
    SCORERS.register("caption_length", CaptionLength, overwrite=True)
    pool = make_minipool(tmp_path / "pool", shards=2, n=300)
    ctx = RunContext(num_workers=2, scores_dir=str(tmp_path / "scores"))
    first = run_filter(LongestCaptions(0.5), pool, str(tmp_path / "a.npy"), ctx)
    lengths = np.array([len(TEXTS[i % len(TEXTS)]) for i in range(300)] * 2, np.float32)
    thr = -np.sort(-lengths)[int(600 * 0.5)]
    assert first["kept"] == int((lengths >= thr).sum()) and first["rules"][0]["computed_threshold"] == thr
    assert _columns(tmp_path / "scores" / "00000001.parquet") == {
        "caption_length": {"scorer": "caption_length", "scale": 1.0}}
    again = run_filter(LongestCaptions(0.5), pool, str(tmp_path / "b.npy"), ctx)
    assert again["scores"]["shards_reused"] == 2
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_the_engine_says_which_devices_its_workers_use(monkeypatch):
    """The score stage asks the engine (``devices``), it does not inspect it: CPU workers, or one per visible GPU."""
    import kl_filter.engines.devices as dev
    from kl_filter.engines import LocalEngine

    assert LocalEngine(3).devices("cpu") == ["cpu"] * 3
    monkeypatch.setattr(dev.os.path, "exists", lambda p: False)  # no NVIDIA device node: cpu, torch never imported
    assert LocalEngine(2).devices("auto") == ["cpu", "cpu"]
