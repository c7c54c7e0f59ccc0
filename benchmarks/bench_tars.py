"""Tars: kl-filter's hand-written tarfile code beside webdataset's, side by side in one run (issue 22).

Three comparisons on the same webdataset shards (the tiny track's pool: 64x64 JPEGs, captions, json):

* import: ``import webdataset`` against ``import tarfile`` in a fresh interpreter (what a base-install command
  such as ``reshard`` or ``inspect --shards_dir`` would pay before its first sample; webdataset imports torch);
* read: every sample of every shard, ``kl_filter.pool.tars.read_samples`` against webdataset's own readers
  (``tariterators.tar_file_iterator`` then ``group_by_keys``, on the same opened file), the samples compared equal;
* write: reshard's writer settings (USTAR, mtime 0, mode 0o444, extensions sorted) with ``tarfile`` against
  ``webdataset.TarWriter`` given the same settings, the two outputs compared byte for byte.

Each pair runs interleaved ``--repeats`` times; the minimum of each side is kept (the machine may be shared).

    python benchmarks/bench_tars.py [--rows 4000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_results  # noqa: E402


def ours_read(paths):
    from kl_filter.pool.tars import read_samples

    return [s for p in paths for s in read_samples(p)]


def wds_read(paths):
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    out = []
    for p in paths:
        with open(p, "rb") as f:
            files = ({**m, "__url__": p} for m in tar_file_iterator(f))  # what url_opener adds
            out += [(d["__key__"], {k: v for k, v in d.items() if not k.startswith("__")})
                    for d in group_by_keys(files, lcase=False)]
    return out


def ours_write(samples) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for key, sample in samples:
            for ext in sorted(sample):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(sample[ext]), 0, 0o444
                tf.addfile(info, io.BytesIO(sample[ext]))
    return buf.getvalue()


def wds_write(samples) -> bytes:
    import webdataset as wds

    buf = io.BytesIO()
    with wds.TarWriter(buf, user="", group="", mode=0o444, mtime=0, encoder=False) as w:
        for key, sample in samples:
            w.write({"__key__": key, **sample})
    return buf.getvalue()


def import_seconds(module: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - t0


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import webdataset

    from kl_filter.apps.tiny.pool import make_pool

    tmp = tempfile.mkdtemp(prefix="bench_tars_")
    make_pool(tmp, args.rows, seed=0, shard_size=1000)
    paths = sorted(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".tar"))
    size = sum(os.path.getsize(p) for p in paths)
    best = {k: float("inf") for k in ("import_webdataset", "import_tarfile", "read_ours", "read_wds", "write_ours",
                                      "write_wds")}
    for _ in range(args.repeats):
        best["import_webdataset"] = min(best["import_webdataset"], import_seconds("webdataset"))
        best["import_tarfile"] = min(best["import_tarfile"], import_seconds("tarfile"))
        t, a = timed(ours_read, paths)
        best["read_ours"] = min(best["read_ours"], t)
        t, b = timed(wds_read, paths)
        best["read_wds"] = min(best["read_wds"], t)
        assert a == b, "the two readers disagree"
        t, x = timed(ours_write, a)
        best["write_ours"] = min(best["write_ours"], t)
        t, y = timed(wds_write, a)
        best["write_wds"] = min(best["write_wds"], t)
        assert x == y, "the two writers' bytes differ"
    n = len(a)
    ratios = {"import": best["import_webdataset"] / best["import_tarfile"],
              "read": best["read_wds"] / best["read_ours"], "write": best["write_wds"] / best["write_ours"]}
    for k, v in best.items():
        print(f"{k:>18}: {v:.4f} s")
    print(f"samples {n}, {size / 2**20:.1f} MiB in {len(paths)} tars; webdataset/ours: import {ratios['import']:.1f}x, "
          f"read {ratios['read']:.2f}x, write {ratios['write']:.2f}x (write: byte-identical output)")
    load = os.getloadavg()[0]
    write_results("bench_tars", {"samples": n, "bytes": size, "tars": len(paths), "repeats": args.repeats,
                                 "webdataset": webdataset.__version__, "seconds": best, "ratios": ratios,
                                 "load_average_1min": load},
                  f"{n:,} samples ({size / 2**20:.1f} MiB), min of {args.repeats}: import webdataset "
                  f"{best['import_webdataset']:.2f} s vs tarfile {best['import_tarfile']:.2f} s "
                  f"({ratios['import']:.0f}x); read kl-filter {best['read_ours']:.3f} s vs webdataset "
                  f"{best['read_wds']:.3f} s ({ratios['read']:.2f}x); write tarfile {best['write_ours']:.3f} s vs "
                  f"TarWriter {best['write_wds']:.3f} s ({ratios['write']:.2f}x, same bytes); shared machine, "
                  f"load average {load:.1f}")


if __name__ == "__main__":
    main()
