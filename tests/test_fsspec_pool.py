"""A pool behind an fsspec URL (here ``memory://``) gives the same subset as the same pool on local disk."""

import os

import fsspec

from kl_filter.filters import build_filter
from kl_filter.selection.runner import RunContext, run_filter
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
