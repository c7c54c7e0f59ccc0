"""The tiny track's IWL experiment (issues 17 and 25): the weighted CLIP loss (the authors' mean and the per-batch
self-normalised one) against open_clip and a float64 reference, macro F1 against scikit-learn, weighted training
that keeps the uniform student's batches and records each batch's weight mass, the temperature list, and a track
run with IWL at two temperatures on a very small config (files, the resampled subsets against the weights, the
weights against a·<x̂, p̂> recomputed from the teacher, shares against the pool's ground truth, the students'
records)."""

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
    from kl_filter.apps.tiny.models import weighted_clip_loss

    for seed, scale in ((0, 14.3), (1, 100.0), (2, 1.0)):
        img, txt = _features(seed)
        s = torch.tensor(scale)
        ours = weighted_clip_loss(img, txt, s, torch.ones(len(img)))
        ref = open_clip.ClipLoss()(img, txt, s)
        assert abs(float(ours) - float(ref)) < 1e-6, (scale, float(ours), float(ref))
        w = np.random.default_rng(seed).exponential(size=len(img))  # any non-negative weights, not normalised
        got = float(weighted_clip_loss(img, txt, s, torch.as_tensor(w, dtype=torch.float32)))
        assert got == pytest.approx(_reference_loss(img, txt, scale, w), rel=1e-5, abs=1e-6)
    # per batch: Σ_j w_j ℓ_j / Σ_j w_j, the same float64 reference times B / Σw
    w = np.random.default_rng(7).exponential(size=12)
    img, txt = _features(4)
    got = float(weighted_clip_loss(img, txt, torch.tensor(14.3), torch.as_tensor(w, dtype=torch.float32), True))
    assert got == pytest.approx(_reference_loss(img, txt, 14.3, w) * 12 / w.sum(), rel=1e-5)
    # one row weighted, the others zero: that row's symmetric cross-entropy over the batch, divided by B
    img, txt = _features(3, b=5)
    w = np.array([0, 0, 3.0, 0, 0])
    got = float(weighted_clip_loss(img, txt, torch.tensor(10.0), torch.as_tensor(w, dtype=torch.float32)))
    assert got == pytest.approx(_reference_loss(img, txt, 10.0, w), rel=1e-5)
    assert got > 0


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    from kl_filter.apps.tiny.models import macro_f1

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
    from kl_filter.apps.tiny.models import register_model_configs

    register_model_configs(str(tmp_path_factory.mktemp("cfg")))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    texts = [f"a {c} {s}" for c, s in zip(rng.choice(["red", "blue", "green"], 40),
                                          rng.choice(["circle", "square"], 40))]
    return images, texts


def test_weighted_training_keeps_the_batches_and_applies_the_weights(student_data):
    from kl_filter.core.errors import KLFilterError
    from kl_filter.apps.tiny.models import STUDENT, train_clip

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
    assert {k: i1["weights"][k] for k in ("mean", "max", "min", "effective_sample_size")} == \
        {"mean": 1.0, "max": 1.0, "min": 1.0, "effective_sample_size": 40.0}
    # each step's weight mass and effective pairs: unit weights give the batch size, with no spread
    assert i1["weights"]["batch_mass"] == {"mean": 16.0, "std": 0.0, "min": 16.0, "max": 16.0}
    assert i1["weights"]["batch_effective_pairs"] == {"mean": 16.0, "min": 16.0}
    w = np.random.default_rng(1).exponential(size=len(texts))
    w /= w.mean()
    m2, i2 = train_clip(*args, weights=w)
    assert i2["weights"]["mean"] == pytest.approx(1.0) and i2["weights"]["effective_sample_size"] == \
        pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    diff = max(float((a - b).abs().max()) for a, b in zip(m0.state_dict().values(), m2.state_dict().values()))
    assert diff > 1e-4  # the weights change the updates
    # the batches' weight mass, recomputed from the trainer's own draws (rng [seed, 7], 16 indices per step)
    rng = np.random.default_rng([5, 7])
    mass = np.array([w[rng.integers(0, 40, size=16)].sum() for _ in range(3)])
    assert i2["weights"]["batch_mass"]["mean"] == pytest.approx(mass.mean(), rel=1e-5)
    assert i2["weights"]["batch_mass"]["max"] == pytest.approx(mass.max(), rel=1e-5)
    m3, i3 = train_clip(*args, weights=w, per_batch=True)
    assert i3["loss"] == "weighted_clip_per_batch" and i3["weights"]["batch_mass"] == i2["weights"]["batch_mass"]
    for bad, msg in ((np.ones(3), "shape"), (np.r_[np.nan, np.ones(39)], "finite"), (-np.ones(40), ">= 0"),
                     (np.zeros(40), "all zero")):
        with pytest.raises(KLFilterError, match=msg):
            train_clip(*args, weights=bad)


def test_sample_weights_map_by_uid(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kl_filter.core.errors import KLFilterError
    from kl_filter.apps.tiny.iwl import sample_weights

    uids = [f"{i:032x}" for i in range(5)]
    pq.write_table(pa.table({"uid": uids, "weight": pa.array([0.5, 1.0, 1.5, 2.0, 0.0], pa.float32())}),
                   tmp_path / "W.parquet")
    got = sample_weights(str(tmp_path / "W.parquet"), [uids[3], uids[0], uids[3], uids[4]])
    assert got.tolist() == [2.0, 0.5, 2.0, 0.0] and got.dtype == np.float64
    pq.write_table(pa.table({"uid": uids, "weight": pa.array([1.0] * 5, pa.float32()),
                             "log_weight": pa.array([0.0, 1.0, -2.0, 3.5, 0.25], pa.float32())}), tmp_path / "R.parquet")
    raw = sample_weights(str(tmp_path / "R.parquet"), [uids[3], uids[2]], raw=True)  # exp(log_weight)
    np.testing.assert_allclose(raw, np.exp([3.5, -2.0]), rtol=1e-7)
    with pytest.raises(KLFilterError, match="1 training uids have no weight"):
        sample_weights(str(tmp_path / "W.parquet"), [uids[1], "f" * 32])


# ---- the comparison and its sentence ------------------------------------------------------------------------------
def _student(values):
    from kl_filter.apps.tiny.iwl import METRICS
    from kl_filter.apps.tiny.iwl_stats import mean_std

    runs = [{"seed": s, **{m: v for m in METRICS}} for s, v in enumerate(values)]
    st = {"runs": runs}
    for m in METRICS:
        st[f"{m}_mean"], st[f"{m}_std"] = mean_std(runs, m)
    return st


def test_verdict_is_two_standard_errors_of_the_difference():
    from kl_filter.apps.tiny.iwl import METRICS
    from kl_filter.apps.tiny.iwl_stats import compare, reading_text, verdict_text

    uni, better, close = _student([0.10, 0.12, 0.11]), _student([0.20, 0.22, 0.21]), _student([0.11, 0.14, 0.10])
    c = compare(better, uni, "zs_digits_f1")
    assert c["diff"] == pytest.approx(0.10) and c["se"] == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 3))
    assert c["verdict"] == "above" and compare(uni, better, "zs_digits")["verdict"] == "below"
    assert compare(close, uni, "zs_digits")["verdict"] == "within"
    assert compare(_student([0.2, 0.2]), _student([0.1, 0.1]), "zs_digits")["verdict"] == "untested"  # no spread

    def comps(students):
        return [{"student": s, **compare(students[s], uni, m)} for s in students for m in METRICS]

    students = {"iwl_resampled": better, "iwl_weighted_raw": close, "iwl_weighted": close}
    text = verdict_text(students, comps(students), 3)
    assert "iwl_resampled: on the target (digits), macro-F1 +10.0 points against uniform (2 SE = 1.6): better " \
           "than uniform by more than two standard errors" in text
    assert "iwl_weighted_raw: on the target (digits), macro-F1 +0.7 points" in text
    assert text.endswith("appears here for iwl_resampled: target macro-F1 above uniform's by more than two "
                         "standard errors over 3 seeds; not for iwl_weighted_raw, the authors' own weighted loss.")
    students["iwl_weighted_raw"] = better
    assert verdict_text(students, comps(students), 3).endswith(
        "appears here for iwl_resampled and iwl_weighted_raw: target macro-F1 above uniform's by more than two "
        "standard errors over 3 seeds.")
    students = {"iwl_resampled": close, "iwl_weighted_raw": close}
    assert "does not appear here: no IWL student" in verdict_text(students, comps(students), 3)
    assert verdict_text(students, comps(students), 1).startswith("One seed: no standard error")

    # the sweep's reading: per a, each student's gain in points ± 2 SE against the paper's 2-8
    big = _student([0.15, 0.16, 0.17])  # +5 points: inside the paper's range
    scales = [{"logit_scale": 10.0, "weights": {"effective_sample_share": 0.2}, "shares": {"iwl_weights": {
        "digit_images": 0.9}}, "students": st, "comparisons": comps(st)}
              for st in ({"iwl_resampled": better, "iwl_weighted_raw": big},)]
    text = reading_text(scales, 3)
    assert text.startswith("a = 10 (effective sample 20.0% of the rows, 90.0% of the weight on digit images): digit "
                           "macro-F1 against uniform, points ± 2 SE: iwl_resampled +10.0 ± 1.6 (above; above the "
                           "paper's 2-8); iwl_weighted_raw +5.0 ± 1.6 (above; inside the paper's 2-8).")
    assert text.endswith("met here by 2 of 2 settings, the largest gain +10.0 points (iwl_resampled at a = 10); by "
                         "the weighted loss in iwl_weighted_raw at a = 10 (+5.0).")


def test_scales_parse():
    from kl_filter.core.errors import KLFilterError
    from kl_filter.apps.tiny.iwl import parse_scales, scale_tag

    assert parse_scales("10, pool,2.71") == [10.0, "pool", 2.71] and parse_scales([27.1]) == [27.1]
    assert [scale_tag(a) for a in (10.0, 27.1, 14.1664)] == ["a10", "a27.1", "a14.1664"]
    for bad, msg in (("10,x", "numbers > 0 or pool"), ("0", "positive"), ("nan", "positive"), ("10,10.0", "twice"),
                     ("pool,pool", "twice"), ("", "numbers > 0 or pool")):
        with pytest.raises(KLFilterError, match=msg):
            parse_scales(bad)


def _fake_result(spec, n):
    from kl_filter.apps.tiny.iwl import METRICS

    v = 0.1 + 0.01 * spec["seed"] + (0.05 if spec["data_dir"].startswith("/resampled") else 0.0)
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
    """Without no_filter in the plan the uniform student trains here, on the pool's tars, beside the weighted ones
    (the same data and seeds: the same batches); with it, its runs are no_filter's. Per scale: a resampled
    student on its subset, and the raw, pool-normalised and per-batch weighted students on the uniform data."""
    from kl_filter.core.errors import KLFilterError
    from kl_filter.apps.tiny.iwl import STUDENTS
    from kl_filter.apps.tiny.iwl_run import IWLRun

    run = IWLRun()
    run.rec, run.n = {"prompt": "p"}, 10
    run.scales = [{"rec": {"tag": f"a{a}", "logit_scale": a, "resample": {"file": f"r{a}.npy"},
                           "weights": {"effective_sample_share": 0.5}, "shares": {"iwl_weights": {"digit_images": 0.5}}},
                   "resampled_dir": f"/resampled{a}", "weights_path": f"/w{a}.parquet"} for a in (10, 2)]
    run.uniform_dir, run.reuse_uniform = ("/reshard/no_filter" if reuse else "/pool"), reuse
    ex = _Executor(10)
    run.submit(ex, _fake_result, {"model": "m", "samples_seen": 64, "lr": 1e-3}, seeds=2)
    got = [(sp["data_dir"], sp["seed"], sp.get("weights"), bool(sp.get("raw_weights")), bool(sp.get("per_batch")))
           for sp in ex.specs]
    data = "/reshard/no_filter" if reuse else "/pool"
    want = [] if reuse else [("/pool", 0, None, False, False), ("/pool", 1, None, False, False)]
    for a in (10, 2):
        want += [(f"/resampled{a}", s, None, False, False) for s in (0, 1)]
        for raw, per_batch in ((True, False), (False, False), (False, True)):
            want += [(data, s, f"/w{a}.parquet", raw, per_batch) for s in (0, 1)]
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
    assert [sc["logit_scale"] for sc in rec["scales"]] == [10, 2]
    for sc in rec["scales"]:
        assert set(sc["students"]) == set(STUDENTS) and sc["verdict"]
        assert sc["students"]["iwl_resampled"]["zs_digits_mean"] == pytest.approx(0.155)
        assert sc["students"]["iwl_weighted_raw"]["zs_digits_mean"] == pytest.approx(0.105)
    assert rec["reading"].startswith("a = 10 (effective sample 50.0%")
    run.submit(_Executor(9), _fake_result, {"model": "m", "samples_seen": 64, "lr": 1e-3}, seeds=1)
    with pytest.raises(KLFilterError, match="trained on 9 samples, expected 10"):
        run.collect()


# ---- the CLI flag ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, want", [([], None), (["--iwl"], True), (["--no_iwl"], False)])
def test_track_iwl_flag_reaches_run_track(tmp_path, monkeypatch, flags, want):
    import kl_filter.apps.tiny.track as track
    from kl_filter.apps.cli import main

    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        return {"results": [], "seeds": [0], "wall_time_s": 1.0, "skipped": [], "iwl": None}

    monkeypatch.setattr(track, "run_track", fake)
    assert main(["track", "--out", str(tmp_path / "o"), "--quick", *flags]) == 0
    assert seen["iwl"] is want and seen["quick"] and seen["iwl_scales"] is None
    assert main(["track", "--out", str(tmp_path / "o2"), "--quick", *flags, "--iwl_scales", "10,pool"]) == 0
    assert seen["iwl_scales"] == "10,pool"


def test_track_iwl_flags_are_exclusive(tmp_path):
    from conftest import run_cli

    p = run_cli("track", "--out", tmp_path / "o", "--quick", "--iwl", "--no_iwl")
    assert p.returncode == 2 and "not allowed with argument" in p.stderr and not (tmp_path / "o").exists()
    p = run_cli("track", "--out", tmp_path / "o", "--quick", "--iwl", "--iwl_scales", "10,warm")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "kl-filter: error: --iwl_scales takes numbers > 0 or pool, separated by commas; got 'warm'"]
    assert not (tmp_path / "o").exists()


# ---- a track run with IWL on a very small config -------------------------------------------------------------------
RUN = """
import json, sys
from kl_filter.apps.tiny.config import TrackConfig
from kl_filter.apps.tiny.track import run_track
cfg = TrackConfig(pool=600, pool_shard=300, teacher_pairs=600, teacher_s_seen=512, teacher_l_seen=1024,
                  student_seen=384, eval_scenes_per_class=10, eval_digits=60, eval_retrieval=40)
run_track(sys.argv[1], quick=True, seeds=2, recipes=["no_filter"], config=cfg, iwl=True, keep_work=True,
          iwl_scales="10,pool", argv=["kl-filter", "track", "--quick", "--iwl", "--iwl_scales", "10,pool"])
"""


@pytest.fixture(scope="module")
def iwl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iwl_track") / "tiny"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", RUN, str(out)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return out, json.loads((out / "run.json").read_text())


@pytest.mark.slow  # runs the tiny track with its IWL students (about 50 s on 2 cores)
def test_track_iwl_outputs_and_values(iwl_run):
    import pyarrow.parquet as pq

    from kl_filter.encoders import Embedder
    from kl_filter.apps.tiny.iwl import METRICS, PROMPT, STUDENTS, shares
    from kl_filter.apps.tiny.iwl_page import iwl_markdown
    from kl_filter.apps.tiny.models import EXTRA_METRICS, METRICS as TABLE, TEACHER_L
    from kl_filter.core.uids import load_uids, u8u8_to_hex

    out, rec = iwl_run
    iwl = rec["iwl"]
    n = rec["pool"]["rows"]
    assert n == 600 and (out / "iwl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "iwl.md").read_text()
    assert md == iwl_markdown(iwl, " ".join(rec["command"]), rec["config"])  # a function of run.json alone
    assert iwl["reading"] in md and "[iwl.md](iwl.md)" in (out / "results.md").read_text()
    assert "zs_digits_f1" not in (out / "results.csv").read_text().splitlines()[0]  # the table keeps its columns

    # the temperatures: the authors' 10, and the teacher's own (pool: embeddings.json)
    work = out / "work"
    recorded = json.loads((work / "metadata" / "embeddings.json").read_text())["families"]["l14"]["logit_scale"]
    assert [sc["logit_scale"] for sc in iwl["scales"]] == [10.0, recorded] and [sc["requested"] for sc in
                                                                                 iwl["scales"]] == [10.0, "pool"]
    assert iwl["scales"][0]["logit_scale_source"] == f"the IWL authors' a = 10; the pool records {recorded:.6g}"
    assert iwl["scales"][1]["logit_scale_source"].startswith("embeddings.json (l14: ")

    p = Embedder(TEACHER_L, str(work / "teachers" / f"{TEACHER_L}.pt"), device="cpu",
                 model_config=str(work / "model_configs")).encode_text([PROMPT])[0].astype(np.float64)
    npz = sorted((work / "metadata").glob("*.npz"))
    u = np.concatenate([np.load(f)["l14_img"].astype(np.float64) for f in npz])
    u /= np.linalg.norm(u, axis=1, keepdims=True)  # the authors' convention: renormalised rows
    uids = np.concatenate([pq.read_table(str(f).replace(".npz", ".parquet"), columns=["uid"]).column("uid")
                           .to_numpy(zero_copy_only=False) for f in npz])
    truth = pq.read_table(work / "pool_shards" / "truth.parquet").to_pydict()
    digit = [(s == "digit") and (k != "junk") for s, k in zip(truth["source"], truth["kind"])]
    nf = next(r for r in rec["results"] if r["recipe"] == "no_filter")
    uni = iwl["students"]["uniform"]
    assert uni["reused_from"] == "no_filter" and uni["runs"] == nf["runs"] and iwl["seeds"] == [0, 1]

    for sc in iwl["scales"]:
        a, tag = sc["logit_scale"], sc["tag"]
        # the weights: mean 1, exp(log_weight)/mean, and log_weight = a·<x̂, p̂> with p the teacher's prompt
        t = pq.read_table(out / "subsets" / f"iwl_weights_{tag}.parquet")
        meta = json.loads(t.schema.metadata[b"kl_filter"])
        w = t.column("weight").to_numpy().astype(np.float64)
        lw = t.column("log_weight").to_numpy().astype(np.float64)
        assert meta["columns"]["weight"]["provenance"]["logit_scale"] == a and sc["weights"]["file"].endswith(tag + ".parquet")
        assert abs(w.mean() - 1) < 1e-6 and sc["weights"]["mean"] == pytest.approx(w.mean(), abs=1e-12)
        np.testing.assert_allclose(w, np.exp(lw) / np.exp(lw).mean(), rtol=1e-5)
        assert list(uids) == t.column("uid").to_pylist()
        np.testing.assert_allclose(lw, a * (u @ (p / np.linalg.norm(p))), atol=1e-5, rtol=0)
        assert sc["weights"]["raw_mean"] == pytest.approx(np.exp(lw).mean(), rel=1e-6)
        ess = w.sum() ** 2 / (w ** 2).sum()
        assert sc["weights"]["effective_sample_size"] == pytest.approx(ess, rel=1e-5)

        # the resampled subset: N = pool rows, each row drawn floor or ceil of N·p_i = w_i times (systematic)
        drawn = [x.decode() for x in u8u8_to_hex(load_uids(str(out / "subsets" / f"iwl_resampled_{tag}.npy")))]
        pos = {x: i for i, x in enumerate(t.column("uid").to_pylist())}
        counts = np.bincount([pos[x] for x in drawn], minlength=n)
        rs = sc["resample"]
        assert len(drawn) == rs["n"] == n and counts.sum() == n
        assert (counts >= np.floor(w - 1e-4)).all() and (counts <= np.ceil(w + 1e-4)).all()
        assert rs["distinct_uids"] == int((counts > 0).sum()) < n and rs["seed"] == 0
        sidecar = json.loads((out / "subsets" / f"iwl_resampled_{tag}.npy.json").read_text())
        rule = next(r for r in sidecar["rules"] if r["rule"] == "resample")
        assert rule["distinct_uids"] == rs["distinct_uids"] and rule["n"] == n and sidecar["seed"] == 0
        assert rule["effective_sample_size"] == pytest.approx(ess, rel=1e-5) and rs["reshard"]["output_count"] == n

        # the shares against the pool's ground truth
        order = [pos[x] for x in truth["uid"]]
        assert sc["shares"]["pool"] == shares(truth, np.ones(n))
        assert sc["shares"]["iwl_resampled"] == pytest.approx(shares(truth, counts[order]), abs=1e-12)
        assert sc["shares"]["iwl_weights"] == pytest.approx(shares(truth, w[order]), abs=1e-12)
        assert sc["shares"]["pool"]["digit_images"] == pytest.approx(np.mean(digit)) and 0.2 < np.mean(digit) < 0.4

        # the students: the same samples seen; the weighted ones on the pool, raw or mean-1 weights
        assert set(sc["students"]) == set(STUDENTS)
        assert {c["student"] for c in sc["comparisons"]} == set(STUDENTS) and sc["verdict"] in md
        for name, st in sc["students"].items():
            assert [r["seed"] for r in st["runs"]] == [0, 1]
            for r in st["runs"]:
                tr = r["train"]
                assert tr["unique_samples"] == n and tr["samples_seen"] == 384
                assert tr["loss"] == {"iwl_resampled": "clip", "iwl_weighted_batch": "weighted_clip_per_batch"}.get(
                    name, "weighted_clip")
                assert set(TABLE) | set(EXTRA_METRICS) <= set(r) and all(0 <= r[m] <= 1 for m in METRICS)
                assert 1 <= r["zs_digits_classes"] <= 10
                if name != "iwl_resampled":
                    assert tr["weights"]["file"] == f"iwl_weights_{tag}.parquet"
                    want = sc["weights"]["raw_mean"] if name == "iwl_weighted_raw" else 1.0
                    assert tr["weights"]["mean"] == pytest.approx(want, rel=1e-6)
                    assert tr["weights"]["raw"] == (name == "iwl_weighted_raw")
            for m in METRICS:
                v = np.array([r[m] for r in st["runs"]])
                assert st[f"{m}_mean"] == pytest.approx(v.mean()) and st[f"{m}_std"] == pytest.approx(v.std(ddof=1))
        # the same batches for the three weighted students of a seed: masses in proportion to the weights' scale
        for k in range(2):
            raw, norm = (sc["students"][s]["runs"][k]["train"]["weights"]["batch_mass"]["mean"]
                         for s in ("iwl_weighted_raw", "iwl_weighted"))
            assert raw == pytest.approx(norm * sc["weights"]["raw_mean"], rel=1e-4)
    assert rec["timings"]["iwl_s"] > 0
