"""Resharding keeps exactly the subset's samples, with duplicates upsampled, as DataComp's resharder does."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from kl_filter.pool.tars import read_samples
from kl_filter.core.uids import hex_to_u8u8, sort_uids


def jpeg(i):
    buf = io.BytesIO()
    Image.new("RGB", (8 + i % 5, 8), (i % 256, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def make_tars(root, shards=3, per=7, skip=()):
    os.makedirs(root)
    samples = {}
    for s in range(shards):
        if s in skip:
            continue
        with tarfile.open(root / f"{s:08d}.tar", "w") as tf:
            for i in range(per):
                n = s * per + i
                uid = f"{n:032x}"
                body = {"jpg": jpeg(n), "txt": f"caption {n}".encode(), "json": json.dumps({"uid": uid}).encode()}
                samples[uid] = body
                for ext, data in body.items():
                    info = tarfile.TarInfo(f"{n:09d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return samples


def test_reshard_exact_samples_multiplicities_and_meta(tmp_path):
    samples = make_tars(tmp_path / "in", shards=4, skip=(2,))  # shard 2 is missing
    (tmp_path / "in" / "00000003.tar").write_bytes(b"not a tar")  # and shard 3 is unreadable
    present = sorted(samples)[:14]  # shards 0 and 1
    subset = [present[0], present[0], present[0], present[5], present[13], "f" * 32, f"{2 * 7:032x}"]
    uids = tmp_path / "subset.npy"
    np.save(uids, sort_uids(hex_to_u8u8(subset)))
    outs = {}
    for workers in (1, 3):
        out = tmp_path / f"out{workers}"
        p = run_cli("reshard", "--shards_dir", tmp_path / "in", "--uids", uids, "--out", out, "--shard_size", "2",
                    "--num_workers", workers, "--no_progress")
        assert p.returncode == 0, p.stderr
        outs[workers] = out
        got = []
        for f in sorted(os.listdir(out)):
            if f.endswith(".tar"):
                got += list(read_samples(str(out / f)))
        keys = [k for k, _ in got]
        assert sorted(keys) == sorted([f"{present[0]}-0", f"{present[0]}-1", f"{present[0]}-2",
                                       f"{present[5]}-0", f"{present[13]}-0"])
        for k, s in got:
            assert s == samples[k.split("-")[0]]  # bytes intact
        meta = json.loads((out / "meta.json").read_text())
        assert meta["output_shard_count"] == 3 and meta["output_shard_format"] == "{:08d}.tar"
        assert meta["output_count"] == 5 and meta["missing_shards"] == ["00000002.tar"]
        assert list(meta["failed_shards"]) == ["00000003.tar"] and meta["subset_not_found"] == 2
        assert (out / "sample_ids.npy").read_bytes() == uids.read_bytes()
        assert json.loads((out / "00000000_stats.json").read_text()) == {"successes": 2}
    for f in sorted(os.listdir(outs[1])):  # identical output for any number of workers
        assert (outs[1] / f).read_bytes() == (outs[3] / f).read_bytes() or f == "meta.json"


def test_reshard_bad_uid_file(tmp_path):
    make_tars(tmp_path / "in", shards=1)
    np.save(tmp_path / "bad.npy", np.arange(3, dtype=np.uint64))
    p = run_cli("reshard", "--shards_dir", tmp_path / "in", "--uids", tmp_path / "bad.npy", "--out", tmp_path / "o")
    assert p.returncode == 2 and "bad.npy" in p.stderr and "dtype" in p.stderr


def test_shards_behind_an_fsspec_url_read_as_local_ones(tmp_path):
    """Reshard (input, subset file and output), thumbnails and BYOD reading take ``memory://`` URLs and give
    the local results byte for byte."""
    import fsspec

    from kl_filter.core.errors import KLFilterError
    from kl_filter.pool.embed import read_tar
    from kl_filter.apps.harness.reshard import reshard
    from kl_filter.pool.tars import list_tars
    from kl_filter.apps.report.thumbs import make_thumbnails

    samples = make_tars(tmp_path / "in", shards=3)
    with tarfile.open(tmp_path / "in" / "00000001.tar", "a") as tf:  # a macOS resource fork is not a sample
        info = tarfile.TarInfo("._000000099.jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    fs = fsspec.filesystem("memory")
    for f in sorted(os.listdir(tmp_path / "in")):
        fs.pipe(f"/kl_tars_test/{f}", (tmp_path / "in" / f).read_bytes())
    url = "memory://kl_tars_test"
    try:
        assert list_tars(url) == [f"memory:///kl_tars_test/{s:08d}.tar" for s in range(3)]
        assert [s.uid for s in read_tar(list_tars(url)[1])] == [f"{n:032x}" for n in range(7, 14)]
        assert [s.uid for t in list_tars(url) for s in read_tar(t)] == sorted(samples)
        subset = sorted(samples)[::4]
        np.save(tmp_path / "subset.npy", sort_uids(hex_to_u8u8(subset)))
        fs.pipe("/kl_tars_test_uids/subset.npy", (tmp_path / "subset.npy").read_bytes())
        for src, uids, out in ((str(tmp_path / "in"), str(tmp_path / "subset.npy"), str(tmp_path / "local")),
                               (url, "memory://kl_tars_test_uids/subset.npy", "memory://kl_tars_test_out")):
            meta = reshard(src, uids, out, num_workers=2, shard_size=3)
            assert meta["output_count"] == len(subset) and not meta["failed_shards"]
        written = sorted(os.path.basename(p) for p in fs.ls("/kl_tars_test_out", detail=False))
        assert written == sorted(os.listdir(tmp_path / "local")) and "sample_ids.npy" in written
        for f in written:
            if f != "meta.json":
                assert (tmp_path / "local" / f).read_bytes() == fs.cat(f"/kl_tars_test_out/{f}"), f
        wanted = subset[:3] + ["e" * 32]
        local, remote = make_thumbnails(str(tmp_path / "in"), wanted, 16), make_thumbnails(url, wanted, 16)
        assert sorted(local) == sorted(remote) == sorted(subset[:3]) and local == remote
        for bad in ("memory://kl_no_such_dir", str(tmp_path / "nowhere")):
            with pytest.raises(KLFilterError, match="shards directory does not exist") as e:
                list_tars(bad)
            assert bad in str(e.value)
    finally:
        for d in ("/kl_tars_test", "/kl_tars_test_uids", "/kl_tars_test_out"):
            if fs.exists(d):
                fs.rm(d, recursive=True)
