"""A synthetic DataComp CommonPool in the real format, with structure like real CLIP features.

Why: filters and the KL scores must be exercised on data that behaves like a web pool, offline. The
generator builds a fixed "world" from the seed (concepts made of an object, a colour, a count and a scene,
with Zipf-like popularity), then per row an image and a caption that share the concept's latent vector,
projected into each embedding family (b32: 512-d, l14: 768-d) with a modality gap, a common "photo"
direction and anisotropic noise. Some rows are damaged like web data: mismatched captions (another
concept), generic captions ("image", "IMG_2041.jpg"), non-English captions (real sentences), small and
extreme-aspect images. ``clip_*_similarity_score`` is the cosine of the stored float16 embeddings.

Format (DataComp's): ``{i:08d}.parquet`` with uid, url, text, original_width, original_height (int64),
clip_b32_similarity_score, clip_l14_similarity_score (float32), face_bboxes (list<list<double>>), sha256;
``{i:08d}.npz`` with b32_img, b32_txt (512), l14_img, l14_txt (768), dedup (256), float16, unit norm.
Every draw comes from ``SeedSequence([seed, shard])`` (rows) or ``SeedSequence(seed)`` (world), so shards are
identical whatever the number of workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.core.atomic import atomic_open, write_json
from kl_filter.core.errors import KLFilterError

DIMS = {"b32": 512, "l14": 768}
LATENT = 64
NOISE_RANK = 64

OBJECTS = ["apple", "dog", "cat", "car", "bicycle", "chair", "cup", "flower", "bird", "horse", "boat", "house",
           "tree", "book", "guitar", "lamp", "shoe", "clock", "train", "airplane", "cake", "pizza", "teddy bear",
           "umbrella", "kite", "laptop", "phone", "bottle", "banana", "orange", "sheep", "cow", "elephant",
           "giraffe", "zebra", "butterfly", "mountain", "bridge", "castle", "lighthouse"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "pink", "brown", "grey", "golden"]
COUNTS = ["a", "two", "three", "four", "five", "several", "many"]
SCENES = ["on a wooden table", "in the street", "on the beach", "in a garden", "on a white background",
          "in the snow", "at night", "in a kitchen", "near a river", "in a field", "on a shelf", "in the city",
          "in a forest", "under a bright sky", "in a living room"]
TEMPLATES = ["{c} {col} {o} {s}", "a photo of {c} {col} {o} {s}", "{c} {col} {o}", "close-up of {c} {col} {o} {s}",
             "{C} {col} {o} {s}, high quality stock photo", "watercolor painting of {c} {col} {o}",
             "{C} {col} {o} {s} for sale", "vintage photograph of {c} {col} {o} {s}"]
GENERIC = ["image", "photo", "picture", "untitled", "Click to enlarge", "", "thumbnail", "no description",
           "IMG_{n}.jpg", "DSC_{n}.JPG", "photo {n}", "image{n}.png", "P{n}.jpg", "screenshot"]
FOREIGN = {
    "de": ["Ein roter Apfel liegt auf dem Holztisch in der Küche", "Zwei Hunde spielen im Garten hinter dem Haus",
           "Das alte Schloss steht auf einem Hügel über dem Fluss", "Eine Katze schläft auf dem Sofa im Wohnzimmer",
           "Frisches Obst und Gemüse auf dem Wochenmarkt kaufen"],
    "fr": ["Une pomme rouge posée sur une table en bois", "Deux chiens jouent dans le jardin derrière la maison",
           "Le vieux château se trouve sur une colline au-dessus de la rivière",
           "Un chat dort sur le canapé du salon", "Acheter des fruits frais au marché ce matin"],
    "es": ["Una manzana roja sobre una mesa de madera", "Dos perros juegan en el jardín detrás de la casa",
           "El viejo castillo está en una colina sobre el río", "Un gato duerme en el sofá de la sala",
           "Comprar frutas frescas en el mercado por la mañana"],
    "it": ["Una mela rossa su un tavolo di legno in cucina", "Due cani giocano nel giardino dietro la casa",
           "Il vecchio castello si trova su una collina sopra il fiume", "Un gatto dorme sul divano del soggiorno"],
    "pt": ["Uma maçã vermelha em cima de uma mesa de madeira", "Dois cachorros brincam no jardim atrás da casa",
           "O velho castelo fica numa colina acima do rio", "Um gato dorme no sofá da sala de estar"],
    "ru": ["Красное яблоко лежит на деревянном столе", "Две собаки играют в саду за домом",
           "Старый замок стоит на холме над рекой", "Кошка спит на диване в гостиной"],
    "ja": ["木のテーブルの上に赤いリンゴがあります", "二匹の犬が家の裏の庭で遊んでいます", "古い城が川の上の丘に立っています"],
    "zh": ["木桌上放着一个红苹果", "两只狗在房子后面的花园里玩耍", "古老的城堡矗立在河边的山上"],
}
DOMAINS = ["cdn.shopify.com", "i.pinimg.com", "images.example-news.com", "upload.wikimedia.org", "photos.blogspot.com",
           "media.stockphotos.net", "img.travelsite.org", "static.flickr.com"]
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _world(seed: int) -> dict:
    """The fixed concept space and, per family, an orthonormal basis, a pure function of the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31]))
    parts = {k: rng.standard_normal((len(v), LATENT)).astype(np.float32) for k, v in
             (("o", OBJECTS), ("col", COLOURS), ("c", COUNTS), ("s", SCENES))}
    world = {"parts": parts, "generic": rng.standard_normal(LATENT).astype(np.float32),
             # anisotropic noise: a decaying spectrum over the noise directions
             "noise_scale": (1.0 / np.sqrt(1.0 + np.arange(NOISE_RANK) / 8.0)).astype(np.float32)}
    for fam, d in list(DIMS.items()) + [("dedup", 256)]:
        # rows: LATENT semantic directions, NOISE_RANK noise directions, image gap, text gap, common direction
        world[fam] = np.linalg.qr(rng.standard_normal((d, LATENT + NOISE_RANK + 3)).astype(np.float32))[0].T.copy()
    return world


# Per family, shares of the squared norm: semantic (times a per-row quality in [0.5, 1.5]), common "photo"
# direction, modality gap; the rest is noise. Matched pairs then have cosine ~ common + semantic, mismatched
# ~ common; L/14 separates pairs better than B/32 (more semantic, less common).
_SHARES = {"b32": (0.135, 0.13, 0.30), "l14": (0.165, 0.07, 0.30), "dedup": (0.5, 0.05, 0.1)}


def _embed(world, fam, latent, quality, modality, rng):
    """Unit-norm float16 embeddings, composed in the (64 + 96 + 3)-d coefficient space, then one GEMM with the
    family's orthonormal basis (so norms are exact before the float16 rounding)."""
    sem_share, com_share, gap_share = _SHARES[fam]
    n = len(latent)
    lat = latent / np.linalg.norm(latent, axis=1, keepdims=True)
    z = rng.standard_normal((n, NOISE_RANK), dtype=np.float32) * world["noise_scale"]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sem = sem_share * quality
    coef = np.empty((n, LATENT + NOISE_RANK + 3), np.float32)
    coef[:, :LATENT] = np.sqrt(sem)[:, None] * lat
    coef[:, LATENT:LATENT + NOISE_RANK] = np.sqrt(np.maximum(1.0 - sem - com_share - gap_share, 0.01))[:, None] * z
    coef[:, -3:] = 0.0
    coef[:, -3 if modality == "img" else -2] = np.sqrt(gap_share)
    coef[:, -1] = np.sqrt(com_share)
    coef /= np.linalg.norm(coef, axis=1, keepdims=True)
    return (coef @ world[fam]).astype(np.float16)


def _hex(rng, n: int, nbytes: int) -> list[str]:
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    chars = np.stack([_HEX[b >> 4], _HEX[b & 15]], axis=2).reshape(n, 2 * nbytes)
    return np.ascontiguousarray(chars).view(f"S{2 * nbytes}").reshape(-1).astype(str).tolist()


def _shard(world, seed: int, index: int, n: int, shares: dict) -> tuple[pa.Table, dict, dict]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    p = world["parts"]
    # the row's concept: Zipf-like popularity per component, so frequent concepts repeat (low information)
    comp = {k: np.minimum(rng.zipf(1.6, n) - 1, len(p[k]) - 1) if k in ("o", "s") else rng.integers(0, len(p[k]), n)
            for k in ("o", "col", "c", "s")}
    latent = sum(p[k][comp[k]] for k in comp)
    kind = rng.choice(4, size=n, p=[1 - shares["mismatch"] - shares["generic"] - shares["non_english"],
                                     shares["mismatch"], shares["generic"], shares["non_english"]])
    txt_comp = {k: v.copy() for k, v in comp.items()}
    mis = kind == 1
    for k in txt_comp:  # a mismatched caption describes another, independently drawn concept
        txt_comp[k][mis] = rng.integers(0, len(p[k]), int(mis.sum()))
    txt_latent = sum(p[k][txt_comp[k]] for k in txt_comp)
    txt_latent[kind == 2] = world["generic"] + 0.3 * rng.standard_normal((int((kind == 2).sum()), LATENT), dtype=np.float32)
    txt_latent[kind == 3] = 0.3 * txt_latent[kind == 3] + 1.0 * world["generic"]  # weak multilingual alignment
    quality = (rng.beta(4.0, 2.0, n) + 0.5).astype(np.float32)
    texts = []
    tmpl = rng.integers(0, len(TEMPLATES), n)
    gen = rng.integers(0, len(GENERIC), n)
    nums = rng.integers(1, 9999, n)
    langs = list(FOREIGN)
    lang = rng.integers(0, len(langs), n)
    sent = rng.integers(0, 5, n)
    for i in range(n):
        if kind[i] == 2:
            texts.append(GENERIC[gen[i]].format(n=nums[i]))
        elif kind[i] == 3:
            pool = FOREIGN[langs[lang[i]]]
            texts.append(pool[sent[i] % len(pool)])
        else:
            c = COUNTS[txt_comp["c"][i]]
            o = OBJECTS[txt_comp["o"][i]]
            o = o if c == "a" else (o + "es" if o.endswith(("s", "sh", "ch")) else o + "s")
            texts.append(TEMPLATES[tmpl[i]].format(c=c, C=c.capitalize(), col=COLOURS[txt_comp["col"][i]], o=o,
                                                   s=SCENES[txt_comp["s"][i]]))
    emb = {}
    for fam in DIMS:
        emb[f"{fam}_img"] = _embed(world, fam, latent, quality, "img", rng)
        emb[f"{fam}_txt"] = _embed(world, fam, txt_latent, quality, "txt", rng)
    emb["dedup"] = _embed(world, "dedup", latent, quality, "img", rng)
    scores = {f"clip_{fam}_similarity_score": np.einsum("ij,ij->i", emb[f"{fam}_img"].astype(np.float32),
                                                        emb[f"{fam}_txt"].astype(np.float32)) for fam in DIMS}
    # image sizes: mostly web-sized, some small, some extreme aspect ratios
    short = np.exp(rng.normal(6.2, 0.45, n)).astype(np.int64) + 120
    small = rng.random(n) < 0.10
    short[small] = rng.integers(16, 200, int(small.sum()))
    aspect = np.exp(np.abs(rng.normal(0, 0.25, n)))
    extreme = rng.random(n) < 0.05
    aspect[extreme] = rng.uniform(3.2, 8.0, int(extreme.sum()))
    long = (short * aspect).astype(np.int64)
    wide = rng.random(n) < 0.6
    width, height = np.where(wide, long, short), np.where(wide, short, long)
    faces = [[[float(v) for v in np.sort(rng.random(2)).tolist() + np.sort(rng.random(2)).tolist()]]
             if f else [] for f in rng.random(n) < 0.04]
    uids = _hex(rng, n, 16)
    dom = rng.integers(0, len(DOMAINS), n)
    table = pa.table({
        "uid": pa.array(uids, pa.string()),
        "url": pa.array([f"https://{DOMAINS[d]}/{u[:2]}/{u[2:14]}.jpg" for d, u in zip(dom, uids)], pa.string()),
        "text": pa.array(texts, pa.string()),
        "original_width": pa.array(width, pa.int64()),
        "original_height": pa.array(height, pa.int64()),
        **{k: pa.array(v, pa.float32()) for k, v in scores.items()},
        "face_bboxes": pa.array(faces, pa.list_(pa.list_(pa.float64()))),
        "sha256": pa.array(_hex(rng, n, 32), pa.string()),
    })
    counts = {name: int((kind == i).sum()) for i, name in enumerate(("clean", "mismatch", "generic", "non_english"))}
    return table, emb, {"rows": n, **counts, "truth": kind}


def synth_pool(out_dir: str, rows: int, shards: int, seed: int = 0, mismatch: float = 0.25, generic: float = 0.08,
               non_english: float = 0.12, compress: bool = False, num_workers: int = 2, progress=None,
               truth: bool = False) -> dict:
    """Write ``shards`` shard pairs holding ``rows`` rows in all; returns (and writes) the manifest."""
    if rows < 1 or not 1 <= shards <= rows:
        raise KLFilterError(f"need rows >= 1 and 1 <= shards <= rows (got rows={rows}, shards={shards})")
    shares = {"mismatch": mismatch, "generic": generic, "non_english": non_english}
    if any(not 0 <= v <= 1 for v in shares.values()) or sum(shares.values()) >= 1:
        raise KLFilterError(f"--mismatch, --generic, --non_english must be in [0, 1] and sum below 1: {shares}")
    from kl_filter.core.outputs import claim_dir

    claim_dir(out_dir, "pool")  # proves the directory is ours (a later synth-pool may write into it)
    world = _world(seed)
    sizes = [rows // shards + (i < rows % shards) for i in range(shards)]
    root = out_dir.rstrip("/")

    def one(i):
        table, emb, info = _shard(world, seed, i, sizes[i], shares)
        with atomic_open(f"{root}/{i:08d}.npz", "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **emb)
        with atomic_open(f"{root}/{i:08d}.parquet", "wb") as f:
            pq.write_table(table, f)
        kinds = info.pop("truth")
        if truth:
            t = pa.table({"uid": table.column("uid"), "category": pa.array(
                np.array(["clean", "mismatch", "generic", "non_english"])[kinds])})
            with atomic_open(f"{root}/synth_truth/{i:08d}.parquet", "wb") as f:
                pq.write_table(t, f)
        if progress:
            progress(i)
        return info

    with cf.ThreadPoolExecutor(max(1, num_workers)) as ex:
        infos = list(ex.map(one, range(shards)))
    manifest = {"generator": "kl_filter.pool.synth", "rows": rows, "shards": shards, "seed": seed, **shares,
                "compress": compress,
                "counts": {k: sum(x[k] for x in infos) for k in ("clean", "mismatch", "generic", "non_english")}}
    write_json(f"{root}/synth_manifest.json", manifest)
    return json.loads(json.dumps(manifest))
