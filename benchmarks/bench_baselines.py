"""DataComp's own ``baselines.py`` against ``kl-filter select``, whole process against whole process.

Both run on the same synthetic pool, same cores, one after the other, each measured from process start to exit
(start-up included) with the peak RSS summed over the process and its workers. DataComp's checkout is a path
you give (``--datacomp_dir``); nothing is downloaded. Its clip_score and laion2b paths need torch, pandas,
gcld3, nltk and a ``fasttext`` module importable (``fasttext-predict`` provides one).

    python benchmarks/bench_baselines.py --datacomp_dir /path/to/datacomp [--rows 2000000 --shards 26]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python, run_measured, setup_pool, write_results  # noqa: E402

CASES = {
    "clip_score_l14_30": (["--name", "clip_score", "--arch", "l14", "--fraction", "0.3"], 5.0),
    "laion2b": (["--name", "laion2b"], 3.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datacomp_dir", required=True, help="a checkout of mlfoundations/datacomp")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    args, tmp, pool = setup_pool(ap, 2_000_000, 26, "bench_baselines_")
    rows = {}
    for case in args.cases:
        flags, target = CASES[case]
        dc_out, ours_out = os.path.join(tmp, f"dc_{case}.npy"), os.path.join(tmp, f"ours_{case}.npy")
        common = ["--metadata_dir", pool, "--num_workers", str(args.num_workers)]
        dc = run_measured([python(), "baselines.py", *flags, *common, "--save_path", dc_out], cwd=args.datacomp_dir,
                          env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": args.datacomp_dir})
        ours = run_measured([python(), "-m", "kl_filter", "select", *flags, *common, "--save_path", ours_out,
                             "--no_progress"])
        same = np.array_equal(np.load(dc_out), np.load(ours_out))
        ratio = dc["seconds"] / ours["seconds"]
        rows[case] = {"datacomp": dc, "kl_filter": ours, "speedup": round(ratio, 2), "target_speedup": target,
                      "identical_uids": bool(same), "kept": int(len(np.load(ours_out)))}
        print(f"{case:20s} datacomp {dc['seconds']:7.2f}s {dc['peak_rss_gb']:5.2f} GB | kl-filter {ours['seconds']:6.2f}s "
              f"{ours['peak_rss_gb']:5.2f} GB | {ratio:5.1f}x faster (target {target}x) | identical uids: {same}")
    line = "; ".join(f"{c}: {r['speedup']}x faster ({r['datacomp']['seconds']}s → {r['kl_filter']['seconds']}s, "
                     f"peak {r['kl_filter']['peak_rss_gb']} GB vs {r['datacomp']['peak_rss_gb']} GB, identical={r['identical_uids']})"
                     for c, r in rows.items())
    note = ("kl-filter runs language ID only on rows the cheap rules keep, and once per distinct caption; "
            "synthetic captions repeat more than real web captions (about half of the laion2b candidates are "
            "distinct here), so the laion2b ratio on a real pool will be lower than on this one")
    print(note)
    write_results("bench_baselines", {"note": note, "pool": pool if args.pool else f"synthetic {args.rows} rows / {args.shards} shards",
                                      "num_workers": args.num_workers, "cases": rows}, line)


if __name__ == "__main__":
    main()
