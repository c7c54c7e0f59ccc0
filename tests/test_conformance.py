"""The conformance suite (:mod:`kl_filter.testing`) catches what it promises to: plugins broken in one way each fail
the contract test that names that promise, and a correct one passes every test. The plugins live in a test file
of their own, run by pytest in a fresh process, as a third party's tests would be."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

PLUGINS = '''
import numpy as np
import pyarrow.parquet as pq

from kl_filter import Filter, Scorer, Top
from kl_filter.testing import FilterContract, ScorerContract


class Length(Scorer):
    """Caption length times --scale."""

    name = "length_t"
    columns = ("text",)

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def outputs(self):
        return ("length_t",)

    def compute(self, shard, stats, device="cpu"):
        return {"length_t": np.array([len(t) * self.scale for t in shard["text"].to_pylist()], np.float32)}


class Sneaky(Length):  # reads a column it does not declare, from the file itself
    def compute(self, shard, stats, device="cpu"):
        width = pq.read_table(shard.shard.parquet, columns=["original_width"]).column(0).to_numpy()
        return {"length_t": width.astype(np.float32) * np.float32(self.scale)}


class Noisy(Length):  # other values at each call
    def compute(self, shard, stats, device="cpu"):
        return {"length_t": np.random.default_rng().random(shard.num_rows).astype(np.float32)}


class Stale(Length):  # a provenance that leaves its parameter out: a stored column is reused at another scale
    def provenance(self, column, stats):
        return {"scorer": self.name}


class Wide(Length):  # float64, one value too many
    def compute(self, shard, stats, device="cpu"):
        return {"length_t": np.zeros(shard.num_rows + 1)}


class Widening(Filter):  # refine() keeps rows the rules dropped
    name = "widening_t"
    columns = ("clip_l14_similarity_score",)
    refine_columns = ("text",)

    def rules(self):
        return [Top("clip_l14_similarity_score", fraction=0.5)]

    def refine(self, shard, keep):
        return np.ones_like(keep)


class Forgetful(Filter):  # keeps its parameter under another name: params() cannot rebuild it
    name = "forgetful_t"
    columns = ("clip_l14_similarity_score",)

    def __init__(self, cut: float = 0.2):
        self.threshold = cut

    def rules(self):
        return [Top("clip_l14_similarity_score", threshold=self.threshold)]


class Small:
    pool_rows, pool_shards = 300, 2


class TestLength(Small, ScorerContract):
    scorer, changed_params = Length, {"scale": 2.0}


class TestSneaky(Small, ScorerContract):
    scorer, changed_params = Sneaky, {"scale": 2.0}


class TestNoisy(Small, ScorerContract):
    scorer, changed_params = Noisy, {"scale": 2.0}


class TestStale(Small, ScorerContract):
    scorer, changed_params = Stale, {"scale": 2.0}


class TestWide(Small, ScorerContract):
    scorer, changed_params = Wide, {"scale": 2.0}


class TestWidening(Small, FilterContract):
    filter = Widening


class TestForgetful(Small, FilterContract):
    filter = Forgetful
'''

# class -> the contract tests it must fail (fail or error); every other test of a broken class may pass or fail
MUST_FAIL = {
    "TestSneaky": {"test_reads_only_declared"},
    "TestNoisy": {"test_compute", "test_deterministic", "test_stored_columns"},
    "TestStale": {"test_provenance_follows_the_values"},
    "TestWide": {"test_compute", "test_deterministic", "test_uid_file"},
    "TestWidening": {"test_refine_only_narrows", "test_uid_file"},
    "TestForgetful": {"test_params_are_its_signature"},
}


@pytest.mark.slow
def test_the_suite_fails_broken_plugins_and_passes_a_correct_one(tmp_path):
    (tmp_path / "test_plugins_t.py").write_text(PLUGINS)
    report = tmp_path / "report.xml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        f"--junitxml={report}", "test_plugins_t.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert report.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    outcome = {}
    for case in ET.parse(report).iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcome[(case.get("classname").rpartition(".")[2], case.get("name"))] = kind
    assert {c for c, _ in outcome} == {"TestLength", *MUST_FAIL}, p.stdout[-3000:]
    good = {t: k for (c, t), k in outcome.items() if c == "TestLength"}
    assert all(k in ("passed", "skipped") for k in good.values()), good
    assert sum(k == "passed" for k in good.values()) >= 10, good
    for cls, tests in MUST_FAIL.items():
        for t in tests:
            assert outcome[(cls, t)] in ("failure", "error"), f"{cls}::{t} {outcome[(cls, t)]}: the suite missed it"
    # a broken plugin fails only where it is broken: TestStale passes everything else
    stale = {t for (c, t), k in outcome.items() if c == "TestStale" and k in ("failure", "error")}
    assert stale == MUST_FAIL["TestStale"], stale


def test_importing_the_suite_stays_light():
    """``import kl_filter.testing`` imports neither torch, open_clip nor the applications."""
    code = ("import sys, kl_filter.testing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'triton') "
            "or m.startswith('kl_filter.apps')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"
