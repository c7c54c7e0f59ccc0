"""``kl-filter demo``: the embedded default. Synthesise a DataComp-format pool, run every recipe that runs
offline, print the table (kept count, share, threshold, seconds) and write it beside the pool; then build the
inspection report (``kl-filter inspect``) of the main recipes' subsets in ``OUT/report``."""

from __future__ import annotations

import os

from kl_filter.core.layouts import first_foreign, json_has, register_layout

DEMO_ENTRIES = ("pool", "scores", "uids", "report", "demo_results.md", "demo_results.json")


def _recognise(fs, p: str, names: list[str]) -> str | None:
    """A demo directory without its marker: what the demo writes, its pool a synthetic one."""
    bad = first_foreign(names, lambda n: n in DEMO_ENTRIES)
    if bad is None and "pool" in names and not json_has(fs, f"{p.rstrip('/')}/pool/synth_manifest.json", "generator"):
        return "pool"
    return bad


register_layout("demo", _recognise)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="synthesise a demo pool and run every offline recipe on it")
    p.add_argument("--out", default="demo_out", help="working directory (pool, scores, UID files, table)")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipes", nargs="+", default=None, help="recipe names (default: all in baselines/)")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no_report", action="store_true", help="skip the inspection report")
    p.add_argument("--all", action="store_true", help="also the slow recipes (negCLIPLoss: minutes each on 2 cores)")
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=run)


def _threshold_text(summary: dict) -> str:
    parts = [f"{r['column']} {'<=' if r.get('reverse') else '>='} {r['computed_threshold']:.4g}"
             for r in summary["rules"] if "computed_threshold" in r]
    return "; ".join(parts) or "-"


def run(args) -> int:
    import json

    from kl_filter.core.atomic import write_bytes, write_json
    from kl_filter.core.errors import KLFilterError
    from kl_filter.core.outputs import In, Out, check, claim_dir
    from kl_filter.pool.synth import synth_pool
    from kl_filter.recipes import list_recipes, load_recipe, recipe_dirs, shipped_recipes
    from kl_filter.apps.report import DEFAULT_FILTERS
    from kl_filter.core.progress import NoProgress, tqdm_progress
    from kl_filter.filters import build_filter
    from kl_filter.runner import RunContext, run_filter

    progress = NoProgress if args.no_progress else tqdm_progress
    given = [r for r in args.recipes or [] if os.path.exists(r)]
    check([Out(args.out, "--out", "dir", marker="demo")], [In(r, "--recipes") for r in given])
    if args.recipes:
        recipes = [load_recipe(r) for r in args.recipes]
    else:  # every shipped recipe, and the report's: a broken installation fails here, loudly, not with 0 recipes
        recipes = list_recipes()
        have = {r.name for r in recipes}
        expected = sorted(set(shipped_recipes()) | set(DEFAULT_FILTERS))
        missing = [n for n in expected if n not in have]
        if not recipes or missing:
            where = ", ".join(recipe_dirs()) or "nowhere"
            raise KLFilterError(f"recipe(s) missing: {', '.join(missing) or 'all'} (looked in {where}); this "
                                "installation lacks its recipes: reinstall kl-filter (`pip install .` ships them "
                                "as kl_filter/baselines/) or set $KL_FILTER_RECIPES")
    claim_dir(args.out, "demo")
    pool_dir = os.path.join(args.out, "pool")
    manifest = os.path.join(pool_dir, "synth_manifest.json")
    want = {"rows": args.rows, "shards": args.shards, "seed": args.seed}
    have = json.load(open(manifest)) if os.path.exists(manifest) else {}
    if any(have.get(k) != v for k, v in want.items()):
        print(f"demo: synthesising {args.rows:,} rows in {args.shards} shards (seed {args.seed}) -> {pool_dir}")
        synth_pool(pool_dir, rows=args.rows, shards=args.shards, seed=args.seed, num_workers=args.num_workers)
    ctx = RunContext(num_workers=args.num_workers, seed=args.seed, scores_dir=os.path.join(args.out, "scores"),
                     progress=progress)
    rows = []
    for r in recipes:
        save = os.path.join(args.out, "uids", f"{r.name}.npy")
        slow = _slow(r) if not (args.recipes or args.all) else None
        if slow:
            rows.append({"recipe": r.name, "skipped": slow})
            continue
        try:
            s = run_filter(build_filter(r.filter, r.params, source=r.path), pool_dir, save, ctx, recipe=r.name)
        except KLFilterError as e:  # e.g. image_based without DataComp's centroid files
            rows.append({"recipe": r.name, "skipped": str(e)})
            continue
        rows.append({"recipe": r.name, "filter": r.filter, "kept": s["kept"], "share": s["kept_share"],
                     "threshold": _threshold_text(s), "seconds": s["timings"]["total_s"]})
    head = "| recipe | kept | share | threshold | seconds |\n|---|---:|---:|---|---:|\n"
    lines = [f"| {x['recipe']} | {x['kept']:,} | {100 * x['share']:.2f}% | {x['threshold']} | {x['seconds']:.2f} |"
             if "kept" in x else f"| {x['recipe']} | - | - | skipped: {x['skipped']} | - |" for x in rows]
    table = head + "\n".join(lines) + "\n"
    write_bytes(os.path.join(args.out, "demo_results.md"),
                f"Demo pool: {args.rows:,} rows, {args.shards} shards, seed {args.seed}\n\n{table}".encode())
    write_json(os.path.join(args.out, "demo_results.json"), {"pool": want, "results": rows})
    print(f"\nDemo pool: {args.rows:,} synthetic DataComp rows, {args.shards} shards, seed {args.seed}\n")
    print(table)
    if not args.no_report:
        from kl_filter.apps.report import build_report

        done = {x["recipe"] for x in rows if "kept" in x}
        subsets = [os.path.join(args.out, "uids", f"{n}.npy") for n in DEFAULT_FILTERS if n in done]
        report = os.path.join(args.out, "report")
        build_report(pool_dir, report, scores_dir=ctx.scores_dir, filters=subsets, ctx=ctx, progress=progress)
        print(f"Inspection report: {os.path.join(os.path.abspath(report), 'index.html')}")
    return 0


def _slow(recipe) -> str | None:
    """Why the demo leaves a recipe out by default: negCLIPLoss scores 10 passes of 32,768-row batches (2·D·|B|
    flops a row and pass: minutes per recipe on a laptop's CPU); ``--all`` or ``--recipes NAME`` runs it."""
    if "negcliploss" in recipe.names():
        return f"slow on a CPU (10 passes of 32,768-row batches): `kl-filter demo --recipes {recipe.name}` runs it"
    return None
