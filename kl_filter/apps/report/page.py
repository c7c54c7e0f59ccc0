"""``index.html``: one self-contained page (inline CSS, no script, no network) over ``figures.json``.

Images are the PNGs under ``plots/`` and ``thumbs/`` beside the page, referenced by relative paths, so the
report directory can be copied or served anywhere. Captions are HTML-escaped.
"""

from __future__ import annotations

import datetime
import html
from types import SimpleNamespace

from kl_filter.apps.report.plots import slug

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1180px;padding:0 18px 40px;color:#1d1d1f}
h1{font-size:22px;margin:22px 0 4px} h2{font-size:18px;margin:30px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px} .muted{color:#666} nav a{margin-right:12px}
table{border-collapse:collapse;margin:6px 0 12px} th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;font-size:12.5px}
th{background:#f4f4f6} td.l,th.l{text-align:left}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px} .ex{display:flex;gap:8px;align-items:flex-start;margin:4px 0}
.ex img{width:64px;height:64px;object-fit:cover;border:1px solid #ccc;flex:none} .ex .s{font-family:monospace;color:#444;min-width:64px}
.ex .c{word-break:break-word} img.plot{max-width:100%;border:1px solid #eee}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _f(v, fmt="{:.4g}") -> str:
    return "–" if v is None else fmt.format(v)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _img(path: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{_e(path)}" alt="{_e(alt)}">'


def _example(r: dict, thumbs: dict) -> str:
    """One example row: thumbnail (when there is one), score, caption and uid."""
    t = thumbs.get(r["uid"])
    pic = _img(t, f"image of {r['uid']}", "thumb") if t else ""
    cap = _e(r["caption"]) + ("…" if r.get("truncated") else "")
    score = "" if r["score"] is None else f"{r['score']:.4f}"
    return (f'<div class="ex">{pic}<span class="s">{score}</span>'
            f'<span class="c">{cap or "<i>(empty caption)</i>"}<br><span class="muted">{_e(r["uid"])}</span>'
            f"</span></div>")


def _examples(title: str, rows: list, thumbs: dict) -> str:
    return f"<div><h4>{_e(title)}</h4>" + "".join(_example(r, thumbs) for r in rows) + "</div>"


def _table(head: list[str], rows: list[list[str]], left=1) -> str:
    """``left``: how many leading columns are left-aligned (text), or the set of their indices."""
    is_left = (lambda i: i < left) if isinstance(left, int) else (lambda i: i in left)
    th = "".join(f'<th class="l">{h}</th>' if is_left(i) else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if is_left(i) else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _removed_table(subs: dict) -> str:
    """One row per subset and step; a subset whose sidecar has no counts gets one row saying so."""
    rows = []
    for n, s in subs.items():
        rem = s.get("removed")
        if rem is None:
            rows.append([_e(n), "<i>not recorded</i>", "–", "–", "–", "–"])
            continue
        rows.append([_e(n), "<i>pool</i>", "–", "–", "–", f"{rem['pool_rows']:,}"])
        rows += [[_e(n), _e(st["step"]), _e(st["kind"]), f"{st['removed']:,}", _pct(st["share"]),
                  f"{st['remaining']:,}"] for st in rem["steps"]]
    return _table(["subset", "step", "kind", "rows removed", "share of pool", "rows remaining"], rows, left=3)


def _scale(v) -> str:
    return "—" if v is None else f"{v:.6g} (τ = {1 / v:.4g})" if v else f"{v:.6g}"


def _temperature_cells(t: dict | None) -> list[str]:
    """The logit scale of a column and where it came from ("—" for none; "mixed" when the shards disagree)."""
    if t is None:
        return ["—", "—"]
    if t["mixed"]:
        each = "; ".join(f"{_scale(v['logit_scale'])} from {_e(v['source'] or '—')} in {v['shards']:,} "
                         f"shard{'s' if v['shards'] != 1 else ''}" for v in t["values"])
        return ["mixed", f"mixed<br><span class='muted'>{each}</span>"]
    return [_scale(t["logit_scale"]), _e(t["source"]) if t["source"] else "—"]


def render(figures: dict, plots: set, thumbs: dict, meta: dict, sections=()) -> str:
    """The page; ``sections``: the filters' report sections (:mod:`.sections`), each drawn from its figures."""
    pool, cols, subs = figures["pool"], figures["columns"], figures["subsets"]
    shown = [s for s in sections if figures.get(s.key)]
    p = []
    p.append(f"<h1>kl-filter inspection report</h1><p class='muted'>pool <code>{_e(pool['metadata_dir'])}</code>: "
             f"{pool['rows']:,} rows in {pool['shards']} shards (fingerprint {_e(pool['fingerprint'])}) · "
             f"seed {figures['seed']} · sample {figures['sample']['size']:,} rows · "
             f"kl-filter {_e(meta['version'])} · {_e(meta['created'])}</p>")
    p.append('<nav><a href="#subsets">Subsets</a><a href="#removed">Rows removed</a><a href="#overlap">Overlap</a>'
             '<a href="#kept">Kept and dropped</a>'
             + "".join(f'<a href="#{_e(s.key)}">{_e(s.title)}</a>' for s in shown)
             + '<a href="#scores">Score columns</a>'
             '<a href="#correlations">Correlations</a><a href="#ngrams">N-gram analysis</a></nav>')

    # subsets
    p.append('<h2 id="subsets">Subsets</h2>')
    if subs:
        rows = [[_e(n), f"{s['kept']:,}", _pct(s["share"]), _pct(s["english"]), f"{s['english_sample_rows']:,}",
                 "; ".join(f"{_e(t['column'])} {_e(t['keep'])} {t['value']:.4g}" for t in s["thresholds"]) or "–"]
                for n, s in subs.items()]
        p.append(_table(["subset", "kept rows", "share of pool", "English (sample)", "sample rows", "thresholds"],
                        rows, left={0, 5}))
        p.append("<p class='muted'>English: fastText lid.176 on the report's uniform sample rows that the subset "
                 f"keeps (pool sample: {_pct(figures['sample']['english'])}).</p>")
    else:
        p.append("<p class='muted'>No subsets given (<code>--filters</code>).</p>")
    p.append('<div class="pair">' + "".join(f"<div>{_img(f, f)}</div>" for f in
                                            ("plots/caption_words.png", "plots/short_side.png") if f in plots) + "</div>")

    # why rows left: each step's count, in the order the run applied the steps
    p.append('<h2 id="removed">Rows removed per step</h2>')
    if subs:
        p.append(_removed_table(subs))
        p.append("<p class='muted'>Steps in the order the run applied them: each counts the rows that passed every "
                 "earlier step and fail this one (rules: score thresholds and flags over the whole pool; refine: "
                 "per-row checks such as language ID on the rows the rules keep). Shares are of the pool the subset "
                 "was selected from. <i>not recorded</i>: a subset file with no sidecar, or a sidecar written "
                 "before kl-filter counted removals.</p>")
    else:
        p.append("<p class='muted'>No subsets given (<code>--filters</code>).</p>")

    # overlap
    ov = figures["overlap"]
    p.append('<h2 id="overlap">Overlap between subsets</h2>')
    if len(ov["subsets"]) > 1:
        names = ov["subsets"]
        rows = [[_e(a)] + [f"{ov['intersection'][i][j]:,}<br><span class='muted'>{_f(ov['jaccard'][i][j], '{:.3f}')}"
                           f"</span>" for j in range(len(names))] for i, a in enumerate(names)]
        p.append(_table([""] + [_e(n) for n in names], rows))
        p.append("<p class='muted'>Each cell: rows kept by both, and the Jaccard index |A∩B| / |A∪B|.</p>")
        if "plots/jaccard.png" in plots:
            p.append(_img("plots/jaccard.png", "Jaccard"))
    else:
        p.append("<p class='muted'>Needs two subsets or more.</p>")

    # what each subset keeps and drops: random rows of the sample
    p.append('<h2 id="kept">Kept and dropped</h2>')
    if subs:
        p.append("<p class='muted'>Random rows of the report's sample that each subset keeps and drops (the sample's "
                 "first rows in its seeded random order), with the subset's threshold column when it has one.</p>")
    for n, s in subs.items():
        col = f" ({_e(s['examples_column'])})" if s["examples_column"] else ""
        p.append(f"<h3>{_e(n)}{col}</h3>")
        p.append('<div class="pair">' + _examples(f"kept: {len(s['kept_examples'])} random", s["kept_examples"],
                                                  thumbs)
                 + _examples(f"dropped: {len(s['dropped_examples'])} random", s["dropped_examples"], thumbs)
                 + "</div>")

    # the filters' own sections (SemDeDup's: semantic deduplication)
    kit = _kit()
    for s in shown:
        p += s.html(figures[s.key], plots, thumbs, kit)

    # score columns
    p.append('<h2 id="scores">Score columns</h2>')
    rows = [[_e(c), _e(figures["column_source"][c]), f"{v['summary']['count']:,}", f"{v['summary']['nan']:,}",
             _f(v["summary"]["mean"]), _f(v["summary"]["std"]), _f(v["summary"]["min"]), _f(v["summary"]["max"]),
             *_temperature_cells(v.get("temperature"))]
            for c, v in cols.items()]
    p.append(_table(["column", "from", "rows", "NaN", "mean", "std", "min", "max", "logit scale", "scale from"],
                    rows, left={0, 1, 9}))
    p.append("<p class='muted'>logit scale: the temperature a density-ratio score was computed at (a = 1/τ, from "
             "the column's provenance in the score files; — when it records none, as for the pool's CLIP "
             "scores; mixed when the shards' files disagree).</p>")
    for c, v in cols.items():
        p.append(f'<h3 id="col-{slug(c)}">{_e(c)}</h3>')
        f = f"plots/hist_{slug(c)}.png"
        if f in plots:
            p.append(_img(f, f"histogram of {c}"))
        p.append('<div class="pair">' + _examples(f"highest {len(v['top'])}", v["top"], thumbs)
                 + _examples(f"lowest {len(v['bottom'])}", v["bottom"], thumbs) + "</div>")

    # correlations
    corr = figures["correlations"]
    p.append('<h2 id="correlations">Correlations between scores</h2>')
    p.append('<div class="pair">' + "".join(f"<div>{_img(f, f)}</div>" for f in
                                            ("plots/pearson.png", "plots/spearman.png") if f in plots) + "</div>")
    if len(corr["columns"]) <= 1:
        p.append("<p class='muted'>Needs two score columns or more.</p>")

    # n-grams
    p.append('<h2 id="ngrams">N-gram analysis</h2><p class="muted">Rows of the sample split into score deciles; '
             "coverage = share of a decile's n-gram occurrences taken by its K most frequent n-grams (low = varied "
             "captions).</p>")
    for c, ng in figures["ngrams"].items():
        p.append(f"<h3>{_e(c)}</h3>")
        f = f"plots/ngrams_{slug(c)}.png"
        if f in plots:
            p.append(_img(f, f"n-gram coverage of {c}"))
        head = ["n"] + [f"D{i + 1}" for i in range(len(ng["deciles"]))]
        rows = [[f"{n}-grams"] + [_f(v, "{:.3f}") for v in vals] for n, vals in ng["coverage"].items()]
        p.append(_table(head, rows))
        tops = ng["top_ngrams"].get("1", {})
        if tops:
            fmt = lambda xs: ", ".join(f"{_e(g)} ({k})" for g, k in xs) or "–"  # noqa: E731
            p.append(f"<p>lowest decile: {fmt(tops.get('lowest', []))}<br>highest decile: "
                     f"{fmt(tops.get('highest', []))}</p>")

    body = "\n".join(p)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>kl-filter report: {_e(pool['metadata_dir'])}</title><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _kit() -> SimpleNamespace:
    """What a filter's report section draws its HTML with (:mod:`kl_filter.filters.report`)."""
    return SimpleNamespace(escape=_e, number=_f, percent=_pct, image=_img, table=_table, example=_example, slug=slug)
