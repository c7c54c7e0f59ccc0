"""A pool behind an fsspec URL (here ``memory://``) gives the same subset as the same pool on local disk."""

import os

import fsspec

from kl_filter.filters import build_filter
from kl_filter.runner import RunContext, run_filter
from minipool import make_minipool


def test_memory_url_pool_matches_local(tmp_path):
    local = make_minipool(tmp_path / "pool", shards=3, n=200)
    fs = fsspec.filesystem("memory")
    for f in sorted(os.listdir(local)):
        fs.pipe(f"/kl_pool_test/{f}", open(os.path.join(local, f), "rb").read())
    a, b = tmp_path / "local.npy", tmp_path / "mem.npy"
    flt = build_filter("clip_score", arch="b32", fraction=0.25)
    sa = run_filter(flt, local, str(a), RunContext(num_workers=2))
    sb = run_filter(flt, "memory://kl_pool_test", str(b), RunContext(num_workers=2))
    assert a.read_bytes() == b.read_bytes() and sa["kept"] == sb["kept"] == 151
    fs.rm("/kl_pool_test", recursive=True)


def test_report_on_a_memory_url_pool_matches_local(tmp_path):
    """``kl-filter inspect`` streams a pool behind an fsspec URL: the same figures as from local disk."""
    import json

    from kl_filter.apps.report import build_report

    local = make_minipool(tmp_path / "pool", shards=2, n=300)
    fs = fsspec.filesystem("memory")
    for f in sorted(os.listdir(local)):
        fs.pipe(f"/kl_report_test/{f}", open(os.path.join(local, f), "rb").read())
    try:
        figs = []
        for src, out in ((local, tmp_path / "a"), ("memory://kl_report_test", tmp_path / "b")):
            build_report(src, str(out), filters=["clip_score_b32_30"], sample_size=200, examples=3, bins=10,
                         ngram_top_k=5, ctx=RunContext(num_workers=2))
            fig = json.loads((out / "figures.json").read_text())
            assert fig["pool"].pop("metadata_dir") == src and fig["pool"]["rows"] == 600
            fig.pop("report")
            for s in fig["subsets"].values():
                s.pop("path")
            figs.append(fig)
        assert figs[0] == figs[1] and figs[0]["subsets"]["clip_score_b32_30"]["kept"] == 181  # int(600 * 0.3) + 1
    finally:
        fs.rm("/kl_report_test", recursive=True)
