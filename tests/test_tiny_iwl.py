"""The tiny track's IWL experiment (issue 17, part 3): the weighted CLIP loss against open_clip and a float64
reference, macro F1 against scikit-learn, weighted training that keeps the uniform student's batches, and a
track run with IWL on a very small config (files, the resampled subset against the weights, the weights against
a·<u_x, p> recomputed from the teacher, shares against the pool's ground truth, the students' records)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


# ---- the weighted loss -------------------------------------------------------------------------------------------
def _features(seed, b=12, d=16):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    return img, txt


def _reference_loss(img, txt, scale, w):
    """mean_j w_j · ½(CE_i2t_j + CE_t2i_j), in float64, written plainly."""
    img, txt, w = img.double().numpy(), txt.double().numpy(), np.asarray(w, dtype=np.float64)
    logits = scale * img @ txt.T
    total = 0.0
    for j in range(len(logits)):
        row, col = logits[j], logits[:, j]
        ce_i2t = -(row[j] - (row.max() + np.log(np.exp(row - row.max()).sum())))
        ce_t2i = -(col[j] - (col.max() + np.log(np.exp(col - col.max()).sum())))
        total += w[j] * 0.5 * (ce_i2t + ce_t2i)
    return total / len(logits)


def test_weighted_clip_loss_is_clip_loss_at_unit_weights_and_the_float64_reference():
    from kl_filter.harness.tiny.models import weighted_clip_loss

    for seed, scale in ((0, 14.3), (1, 100.0), (2, 1.0)):
        img, txt = _features(seed)
        s = torch.tensor(scale)
        ours = weighted_clip_loss(img, txt, s, torch.ones(len(img)))
        ref = open_clip.ClipLoss()(img, txt, s)
        assert abs(float(ours) - float(ref)) < 1e-6, (scale, float(ours), float(ref))
        w = np.random.default_rng(seed).exponential(size=len(img))  # any non-negative weights, not normalised
        got = float(weighted_clip_loss(img, txt, s, torch.as_tensor(w, dtype=torch.float32)))
        assert got == pytest.approx(_reference_loss(img, txt, scale, w), rel=1e-5, abs=1e-6)
    # one row weighted, the others zero: that row's symmetric cross-entropy over the batch, divided by B
    img, txt = _features(3, b=5)
    w = np.array([0, 0, 3.0, 0, 0])
    got = float(weighted_clip_loss(img, txt, torch.tensor(10.0), torch.as_tensor(w, dtype=torch.float32)))
    assert got == pytest.approx(_reference_loss(img, txt, 10.0, w), rel=1e-5)
    assert got > 0


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    from kl_filter.harness.tiny.models import macro_f1

    rng = np.random.default_rng(0)
    for k, n in ((10, 360), (6, 60), (10, 7)):  # (10, 7): classes with neither a true nor a predicted row
        labels, pred = rng.integers(0, k, n), rng.integers(0, k, n)
        pred[: n // 3] = labels[: n // 3]
        want = f1_score(labels, pred, average="macro", labels=list(range(k)), zero_division=0)
        assert macro_f1(pred, labels, k) == pytest.approx(want, abs=1e-12)
    assert macro_f1([1, 1, 1, 1], [0, 1, 2, 3], 4) == pytest.approx(0.4 / 4)  # one class predicted: F1 2/5 on it
    assert macro_f1([0, 1, 2], [0, 1, 2], 3) == 1.0


# ---- weighted training ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def student_data(tmp_path_factory):
    from kl_filter.harness.tiny.models import register_model_configs

    register_model_configs(str(tmp_path_factory.mktemp("cfg")))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    texts = [f"a {c} {s}" for c, s in zip(rng.choice(["red", "blue", "green"], 40),
                                          rng.choice(["circle", "square"], 40))]
    return images, texts


def test_weighted_training_keeps_the_batches_and_applies_the_weights(student_data):
    from kl_filter.errors import KLFilterError
    from kl_filter.harness.tiny.models import STUDENT, train_clip

    images, texts = student_data
    torch.set_num_threads(1)
    args = (STUDENT, images, texts, 48, 16, 2e-3, 5)
    m0, i0 = train_clip(*args)
    m1, i1 = train_clip(*args, weights=np.ones(len(texts)))
    # unit weights: the same init, the same batches, the loss equal to ClipLoss's within 1e-6 -> the same model
    assert i0["loss"] == "clip" and i1["loss"] == "weighted_clip" and i0["steps"] == i1["steps"] == 3
    assert i1["final_loss"] == pytest.approx(i0["final_loss"], abs=1e-5)
    for (n, a), b in zip(m0.state_dict().items(), m1.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=n)
    assert i1["weights"] == {"mean": 1.0, "max": 1.0, "min": 1.0, "effective_sample_size": 40.0}
    w = np.random.default_rng(1).exponential(size=len(texts))
    w /= w.mean()
    m2, i2 = train_clip(*args, weights=w)
    assert i2["weights"]["mean"] == pytest.approx(1.0) and i2["weights"]["effective_sample_size"] == \
        pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    diff = max(float((a - b).abs().max()) for a, b in zip(m0.state_dict().values(), m2.state_dict().values()))
    assert diff > 1e-4  # the weights change the updates
    for bad, msg in ((np.ones(3), "shape"), (np.r_[np.nan, np.ones(39)], "finite"), (-np.ones(40), ">= 0"),
                     (np.zeros(40), "all zero")):
        with pytest.raises(KLFilterError, match=msg):
            train_clip(*args, weights=bad)


def test_sample_weights_map_by_uid(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kl_filter.errors import KLFilterError
    from kl_filter.harness.tiny.iwl import sample_weights

    uids = [f"{i:032x}" for i in range(5)]
    pq.write_table(pa.table({"uid": uids, "weight": pa.array([0.5, 1.0, 1.5, 2.0, 0.0], pa.float32())}),
                   tmp_path / "W.parquet")
    got = sample_weights(str(tmp_path / "W.parquet"), [uids[3], uids[0], uids[3], uids[4]])
    assert got.tolist() == [2.0, 0.5, 2.0, 0.0] and got.dtype == np.float64
    with pytest.raises(KLFilterError, match="1 training uids have no weight"):
        sample_weights(str(tmp_path / "W.parquet"), [uids[1], "f" * 32])


# ---- the comparison and its sentence ------------------------------------------------------------------------------
def _student(values):
    from kl_filter.harness.tiny.iwl import METRICS, mean_std

    runs = [{"seed": s, **{m: v for m in METRICS}} for s, v in enumerate(values)]
    st = {"runs": runs}
    for m in METRICS:
        st[f"{m}_mean"], st[f"{m}_std"] = mean_std(runs, m)
    return st


def test_verdict_is_two_standard_errors_of_the_difference():
    from kl_filter.harness.tiny.iwl import METRICS, compare, verdict_text

    uni, better, close = _student([0.10, 0.12, 0.11]), _student([0.20, 0.22, 0.21]), _student([0.11, 0.14, 0.10])
    c = compare(better, uni, "zs_digits_f1")
    assert c["diff"] == pytest.approx(0.10) and c["se"] == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 3))
    assert c["verdict"] == "above" and compare(uni, better, "zs_digits")["verdict"] == "below"
    assert compare(close, uni, "zs_digits")["verdict"] == "within"
    assert compare(_student([0.2, 0.2]), _student([0.1, 0.1]), "zs_digits")["verdict"] == "untested"  # no spread
    students = {"uniform": uni, "iwl_resampled": better, "iwl_weighted": close}
    comps = [{"student": s, **compare(students[s], uni, m)} for s in ("iwl_resampled", "iwl_weighted") for m in METRICS]
    text = verdict_text(students, comps, 3)
    assert "iwl_resampled: on the target (digits), macro-F1 +10.0 points against uniform (2 SE = 1.6): better " \
           "than uniform by more than two standard errors" in text
    assert "iwl_weighted: on the target (digits), macro-F1 +0.7 points" in text
    assert text.endswith("appears here for iwl_resampled: target macro-F1 above uniform's by more than two "
                         "standard errors over 3 seeds; not for iwl_weighted, the authors' own weighted loss.")
    students["iwl_weighted"] = better
    comps = [{"student": s, **compare(students[s], uni, m)} for s in ("iwl_resampled", "iwl_weighted") for m in METRICS]
    assert verdict_text(students, comps, 3).endswith("appears here for iwl_resampled and iwl_weighted: target "
                                                     "macro-F1 above uniform's by more than two standard errors over "
                                                     "3 seeds.")
    students["iwl_resampled"] = students["iwl_weighted"] = close
    comps = [{"student": s, **compare(students[s], uni, m)} for s in ("iwl_resampled", "iwl_weighted") for m in METRICS]
    assert "does not appear here: neither IWL student" in verdict_text(students, comps, 3)
    assert verdict_text(students, comps, 1).startswith("One seed: no standard error")


def _fake_result(spec, n):
    from kl_filter.harness.tiny.iwl import METRICS

    v = 0.1 + 0.01 * spec["seed"] + (0.05 if spec["data_dir"] == "/resampled" else 0.0)
    return {"train": {"unique_samples": n, "samples_seen": spec["samples_seen"]},
            "eval": {m: v for m in METRICS}}


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _Executor:
    def __init__(self, n):
        self.n, self.specs = n, []

    def submit(self, task, spec):
        self.specs.append(spec)
        return _Done(task(spec, self.n))


@pytest.mark.parametrize("reuse", [True, False])
def test_students_without_and_with_no_filter(reuse):
    """Without no_filter in the plan the uniform student trains here, on the pool's tars, beside the weighted one
    (the same data and seeds: the same batches); with it, its runs are no_filter's."""
    from kl_filter.errors import KLFilterError
    from kl_filter.harness.tiny.iwl import IWLRun

    run = IWLRun()
    run.rec, run.n = {"prompt": "p"}, 10
    run.resampled_dir, run.weights_path = "/resampled", "/w.parquet"
    run.uniform_dir, run.reuse_uniform = ("/reshard/no_filter" if reuse else "/pool"), reuse
    ex = _Executor(10)
    run.submit(ex, _fake_result, {"model": "m", "samples_seen": 64, "lr": 1e-3}, seeds=2)
    got = [(sp["data_dir"], sp["seed"], sp.get("weights")) for sp in ex.specs]
    data = "/reshard/no_filter" if reuse else "/pool"
    want = ([] if reuse else [("/pool", 0, None), ("/pool", 1, None)]) + \
        [("/resampled", 0, None), ("/resampled", 1, None), (data, 0, "/w.parquet"), (data, 1, "/w.parquet")]
    assert got == want and all(sp["samples_seen"] == 64 for sp in ex.specs)
    run.collect()
    nf = [{"seed": 1, "zs_digits": 0.3}, {"seed": 0, "zs_digits": 0.2}]
    rows = [{"recipe": "no_filter", "runs": [{**r, **{m: r["zs_digits"] for m in
                                                       ("zs_digits_f1", "zs_scenes", "zs_scenes_f1", "ret_r1")}}
                                             for r in nf]}]
    rec = run.record(rows, 2)
    uni = rec["students"]["uniform"]
    assert uni["reused_from"] == ("no_filter" if reuse else None)
    assert [r["seed"] for r in uni["runs"]] == [0, 1]
    assert uni["zs_digits_mean"] == pytest.approx(0.25 if reuse else 0.105)
    assert rec["students"]["iwl_resampled"]["zs_digits_mean"] == pytest.approx(0.155)
    run.submit(_Executor(9), _fake_result, {"model": "m", "samples_seen": 64, "lr": 1e-3}, seeds=1)
    with pytest.raises(KLFilterError, match="trained on 9 samples, expected 10"):
        run.collect()


# ---- the CLI flag ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, want", [([], None), (["--iwl"], True), (["--no_iwl"], False)])
def test_track_iwl_flag_reaches_run_track(tmp_path, monkeypatch, flags, want):
    import kl_filter.harness.tiny.track as track
    from kl_filter.cli import main

    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        return {"results": [], "seeds": [0], "wall_time_s": 1.0, "skipped": [], "iwl": None}

    monkeypatch.setattr(track, "run_track", fake)
    assert main(["track", "--out", str(tmp_path / "o"), "--quick", *flags]) == 0
    assert seen["iwl"] is want and seen["quick"]


def test_track_iwl_flags_are_exclusive(tmp_path):
    from conftest import run_cli

    p = run_cli("track", "--out", tmp_path / "o", "--quick", "--iwl", "--no_iwl")
    assert p.returncode == 2 and "not allowed with argument" in p.stderr and not (tmp_path / "o").exists()


# ---- a track run with IWL on a very small config -------------------------------------------------------------------
RUN = """
import json, sys
from kl_filter.harness.tiny.track import TrackConfig, run_track
cfg = TrackConfig(pool=600, pool_shard=300, teacher_pairs=600, teacher_s_seen=512, teacher_l_seen=1024,
                  student_seen=384, eval_scenes_per_class=10, eval_digits=60, eval_retrieval=40)
run_track(sys.argv[1], quick=True, seeds=2, recipes=["no_filter"], config=cfg, iwl=True, keep_work=True,
          argv=["kl-filter", "track", "--quick", "--iwl"])
"""


@pytest.fixture(scope="module")
def iwl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iwl_track") / "tiny"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", RUN, str(out)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return out, json.loads((out / "run.json").read_text())


def test_track_iwl_outputs_and_values(iwl_run):
    import pyarrow.parquet as pq

    from kl_filter.harness.embed import Embedder
    from kl_filter.harness.tiny.iwl import METRICS, PROMPT, iwl_markdown, shares
    from kl_filter.harness.tiny.models import EXTRA_METRICS, METRICS as TABLE, TEACHER_L
    from kl_filter.uids import load_uids, u8u8_to_hex

    out, rec = iwl_run
    iwl = rec["iwl"]
    n = rec["pool"]["rows"]
    assert n == 600 and (out / "iwl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "iwl.md").read_text()
    assert md == iwl_markdown(iwl, " ".join(rec["command"]), rec["config"])  # a function of run.json alone
    assert iwl["verdict"] in md and "[iwl.md](iwl.md)" in (out / "results.md").read_text()
    assert "zs_digits_f1" not in (out / "results.csv").read_text().splitlines()[0]  # the table keeps its columns

    # the weights: mean 1, exp(log_weight)/mean, and log_weight = a·<u_x, p> with p the teacher's "a handwritten digit"
    t = pq.read_table(out / "subsets" / "iwl_weights.parquet")
    meta = json.loads(t.schema.metadata[b"kl_filter"])
    w = t.column("weight").to_numpy().astype(np.float64)
    lw = t.column("log_weight").to_numpy().astype(np.float64)
    a = iwl["logit_scale"]
    assert a > 0 and meta["columns"]["weight"]["provenance"]["logit_scale"] == a
    assert abs(w.mean() - 1) < 1e-6 and iwl["weights"]["mean"] == pytest.approx(w.mean(), abs=1e-12)
    np.testing.assert_allclose(w, np.exp(lw) / np.exp(lw).mean(), rtol=1e-5)
    work = out / "work"
    p = Embedder(TEACHER_L, str(work / "teachers" / f"{TEACHER_L}.pt"), device="cpu",
                 model_config=str(work / "model_configs")).encode_text([PROMPT])[0].astype(np.float64)
    npz = sorted((work / "metadata").glob("*.npz"))
    u = np.concatenate([np.load(f)["l14_img"].astype(np.float64) for f in npz])
    uids = np.concatenate([pq.read_table(str(f).replace(".npz", ".parquet"), columns=["uid"]).column("uid")
                           .to_numpy(zero_copy_only=False) for f in npz])
    assert list(uids) == t.column("uid").to_pylist()
    np.testing.assert_allclose(lw, a * (u @ (p / np.linalg.norm(p))), atol=1e-4, rtol=0)
    ess = w.sum() ** 2 / (w ** 2).sum()
    assert iwl["weights"]["effective_sample_size"] == pytest.approx(ess, rel=1e-5)

    # the resampled subset: N = pool rows, each row drawn floor or ceil of N·p_i = w_i times (systematic)
    drawn = [x.decode() for x in u8u8_to_hex(load_uids(str(out / "subsets" / "iwl_resampled.npy")))]
    pos = {x: i for i, x in enumerate(t.column("uid").to_pylist())}
    counts = np.bincount([pos[x] for x in drawn], minlength=n)
    assert len(drawn) == iwl["resample"]["n"] == n and counts.sum() == n
    assert (counts >= np.floor(w - 1e-4)).all() and (counts <= np.ceil(w + 1e-4)).all()
    assert iwl["resample"]["distinct_uids"] == int((counts > 0).sum()) < n and iwl["resample"]["seed"] == 0
    sidecar = json.loads((out / "subsets" / "iwl_resampled.npy.json").read_text())
    rule = next(r for r in sidecar["rules"] if r["rule"] == "resample")
    assert rule["distinct_uids"] == iwl["resample"]["distinct_uids"] and rule["n"] == n and sidecar["seed"] == 0
    assert rule["effective_sample_size"] == pytest.approx(ess, rel=1e-5)
    assert iwl["resample"]["reshard"]["output_count"] == n

    # the shares against the pool's ground truth
    truth = pq.read_table(work / "pool_shards" / "truth.parquet").to_pydict()
    order = [pos[x] for x in truth["uid"]]
    assert iwl["shares"]["pool"] == shares(truth, np.ones(n))
    assert iwl["shares"]["iwl_resampled"] == pytest.approx(shares(truth, counts[order]), abs=1e-12)
    assert iwl["shares"]["iwl_weights"] == pytest.approx(shares(truth, w[order]), abs=1e-12)
    digit = [(s == "digit") and (k != "junk") for s, k in zip(truth["source"], truth["kind"])]
    assert iwl["shares"]["pool"]["digit_images"] == pytest.approx(np.mean(digit)) and 0.2 < np.mean(digit) < 0.4

    # the students: uniform = no_filter's runs; the same samples seen; weighted on the pool with mean-1 weights
    assert set(iwl["students"]) == {"uniform", "iwl_resampled", "iwl_weighted"} and iwl["seeds"] == [0, 1]
    nf = next(r for r in rec["results"] if r["recipe"] == "no_filter")
    assert iwl["students"]["uniform"]["reused_from"] == "no_filter" and iwl["students"]["uniform"]["runs"] == nf["runs"]
    seen = {st["runs"][k]["train"]["samples_seen"] for st in iwl["students"].values() for k in range(2)}
    assert seen == {384}
    for name, st in iwl["students"].items():
        assert [r["seed"] for r in st["runs"]] == [0, 1]
        for r in st["runs"]:
            assert r["train"]["unique_samples"] == n
            assert r["train"]["loss"] == ("weighted_clip" if name == "iwl_weighted" else "clip")
            assert set(TABLE) | set(EXTRA_METRICS) <= set(r) and all(0 <= r[m] <= 1 for m in METRICS)
        for m in METRICS:
            v = np.array([r[m] for r in st["runs"]])
            assert st[f"{m}_mean"] == pytest.approx(v.mean()) and st[f"{m}_std"] == pytest.approx(v.std(ddof=1))
    for r in iwl["students"]["iwl_weighted"]["runs"]:
        assert r["train"]["weights"]["mean"] == pytest.approx(1.0, abs=1e-6)
        assert r["train"]["weights"]["file"] == "iwl_weights.parquet"
    assert rec["timings"]["iwl_s"] > 0 and {c["student"] for c in iwl["comparisons"]} == {"iwl_resampled",
                                                                                            "iwl_weighted"}
