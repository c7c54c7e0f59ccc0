"""The tiny track's training data: a pool with web-like noise (for the filters) and a clean split (for the teachers).

Pool noise kinds (the ``kind`` recorded per uid in ``truth.parquet``, never shown to a filter):

=========  =====  ===================================================================================
clean      0.42   the content's own English caption (sometimes with web clutter like "- stock photo")
mismatch   0.15   the caption of another, unrelated content draw
generic    0.10   "image", "IMG_2041.jpg", "click to enlarge", ...
foreign    0.10   German / French / Spanish: a translation of the caption, or an unrelated real sentence
tiny       0.07   matching caption, image degraded to 8-16 px, nominal original size under 200 px
banner     0.03   matching caption, content squeezed into a strip, nominal aspect ratio above 3
junk       0.05   noise / gradient image with an unrelated caption
duplicate  0.08   an exact copy (image and caption) of an earlier pool sample, under a new uid
=========  =====  ===================================================================================

Images are stored as 64x64 JPEGs (the models' input size, see :mod:`.shards`); ``original_width``/
``original_height`` in the json are nominal web sizes (220-1600 px, aspect <= 2.5) except for tiny and banner
samples. The teacher split has no noise, its own rng stream and its own digit images (:func:`.content.digit_split`).
"""

from __future__ import annotations

import os

import numpy as np

from kl_filter.apps.tiny.content import IMAGE_SIZE, SPLIT_POOL, SPLIT_TEACHER, digit_split, draw_content, translate
from kl_filter.apps.tiny.shards import write_shards

POOL_KINDS = {"clean": 0.42, "mismatch": 0.15, "generic": 0.10, "foreign": 0.10, "tiny": 0.07, "banner": 0.03,
              "junk": 0.05, "duplicate": 0.08}

GENERIC = ["image", "photo", "picture", "untitled", "thumbnail", "click to enlarge", "stock photo", "download",
           "img", "screenshot", "no description available", "view full size", "banner", "product image",
           "see more", "image not found", "placeholder", "default"]
GENERIC_FILES = ["IMG_{n}.jpg", "DSC_{n}.JPG", "P10{n}.JPG", "image{n}.png", "photo_{n}.jpeg", "Screenshot_{n}.png"]
CLUTTER = [" - stock photo", " | free download", " stock illustration", " (royalty free)", " - image",
           " vector", " #{n}"]

# real sentences, unrelated to any image of the pool
FOREIGN_SENTENCES = [
    "Ein schöner Tag am Meer mit der ganzen Familie", "Das Wetter ist heute sehr schön", "Unser neues Haus im Grünen",
    "Frisches Brot direkt aus dem Ofen", "Wir wünschen Ihnen frohe Weihnachten", "Sonderangebot nur diese Woche",
    "Blick auf die Altstadt bei Nacht", "Mein Hund spielt gern im Garten", "Jetzt kaufen und sparen",
    "Photo de vacances en famille", "Le chat dort sur le canapé", "Une belle journée au bord de la mer",
    "Recette facile de gâteau au chocolat", "Vue sur la montagne au coucher du soleil", "Livraison gratuite dès 50 euros",
    "Nouvelle collection printemps été", "Le marché du samedi matin", "Bienvenue sur notre site",
    "Vista de la ciudad por la noche", "Mi perro jugando en el parque", "La playa al atardecer",
    "Receta tradicional de paella valenciana", "Oferta especial por tiempo limitado", "Nuestra tienda en el centro",
    "Feliz cumpleaños a mi mejor amiga", "Paisaje de montaña en invierno", "Compra ahora con envío gratis",
]


# --- web-like noise ---------------------------------------------------------------------------------------------
def _uid(rng) -> str:
    return rng.bytes(16).hex()


def _web_size(rng) -> tuple[int, int]:
    long = int(np.exp(rng.uniform(np.log(300), np.log(1600))))
    short = max(200, int(long / rng.uniform(1.0, 2.5)))
    return (long, short) if rng.random() < 0.6 else (short, long)


def _degrade(rng, image: np.ndarray) -> np.ndarray:
    from PIL import Image

    s = int(rng.integers(8, 17))
    small = Image.fromarray(image).resize((s, s), Image.BILINEAR)
    return np.asarray(small.resize((IMAGE_SIZE, IMAGE_SIZE), Image.NEAREST))


def _banner(rng, image: np.ndarray) -> np.ndarray:
    from PIL import Image

    h = int(rng.integers(10, 18))
    strip = Image.fromarray(image).resize((IMAGE_SIZE, h), Image.BILINEAR)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    canvas.paste(strip, (0, (IMAGE_SIZE - h) // 2))
    return np.asarray(canvas)


def _junk(rng) -> np.ndarray:
    if rng.random() < 0.5:
        return rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    a, b = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    t = np.linspace(0, 1, IMAGE_SIZE)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, IMAGE_SIZE)[:, None, None]
    return np.broadcast_to(a + t * (b - a), (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)


def _clutter(rng, caption: str) -> str:
    if rng.random() < 0.15:
        return caption + CLUTTER[int(rng.integers(len(CLUTTER)))].format(n=int(rng.integers(1, 999)))
    if rng.random() < 0.05:
        return caption[0].upper() + caption[1:]
    return caption


def pool_sample(seed: int, i: int, digit_indices: np.ndarray, kind: str | None = None) -> dict:
    """Pool sample ``i`` (not a duplicate): image, caption, kind, nominal original size, uid."""
    rng = np.random.default_rng([seed, SPLIT_POOL, i])
    uid = _uid(rng)
    kinds = {k: p for k, p in POOL_KINDS.items() if k != "duplicate"}
    if kind is None:
        kind = str(rng.choice(list(kinds), p=np.array(list(kinds.values())) / sum(kinds.values())))
    content = draw_content(rng, digit_indices)
    image, caption, (w, h) = content["image"], content["caption"], _web_size(rng)
    lang = None
    if kind == "clean":
        caption = _clutter(rng, caption)
    elif kind == "mismatch":
        caption = _clutter(rng, draw_content(rng, digit_indices, render=False)["caption"])
    elif kind == "generic":
        if rng.random() < 0.5:
            caption = GENERIC[int(rng.integers(len(GENERIC)))]
        else:
            caption = GENERIC_FILES[int(rng.integers(len(GENERIC_FILES)))].format(n=int(rng.integers(1000, 9999)))
    elif kind == "foreign":
        lang = str(rng.choice(["de", "fr", "es"]))
        translated = translate(content, lang)
        caption = translated if translated is not None and rng.random() < 0.7 else \
            FOREIGN_SENTENCES[int(rng.integers(len(FOREIGN_SENTENCES)))]
    elif kind == "tiny":
        image = _degrade(rng, image)
        w, h = int(rng.integers(24, 180)), int(rng.integers(24, 180))
    elif kind == "banner":
        image = _banner(rng, image)
        h = int(rng.integers(60, 200))
        w = int(h * rng.uniform(3.5, 8))
    elif kind == "junk":
        image = _junk(rng)
        caption = draw_content(rng, digit_indices, render=False)["caption"]
    else:
        raise ValueError(f"unknown pool kind {kind!r}")
    return {"uid": uid, "kind": kind, "source": content["source"], "lang": lang or "en", "caption": caption,
            "image": image, "original_width": w, "original_height": h}


# --- the pool and the teacher split ----------------------------------------------------------------------------
def make_pool(out_dir: str, n: int, seed: int, shard_size: int = 2000) -> dict:
    """Write an ``n``-sample noisy pool as tars into ``out_dir`` and ``truth.parquet`` (uid, kind, source, lang,
    caption, dup_of: the uid a planted duplicate copies, "" for the others)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kl_filter.core.atomic import atomic_open

    digits = digit_split(seed)["pool"]
    rng = np.random.default_rng([seed, SPLIT_POOL])
    kinds = rng.choice(list(POOL_KINDS), size=n, p=list(POOL_KINDS.values()))
    samples, seen = [], set()
    for i in range(n):
        if kinds[i] == "duplicate" and samples:
            src = samples[int(rng.integers(len(samples)))]
            s = dict(src, uid=_uid(np.random.default_rng([seed, SPLIT_POOL, i, 1])), kind="duplicate",
                     dup_of=src["uid"])
        else:
            s = pool_sample(seed, i, digits, None if kinds[i] == "duplicate" else str(kinds[i]))
        while s["uid"] in seen:  # 128-bit collisions do not happen, but a duplicate uid would be fatal
            s["uid"] = _uid(rng)
        seen.add(s["uid"])
        samples.append(s)
    write_shards(samples, out_dir, shard_size)
    truth = pa.table({"uid": [s["uid"] for s in samples], "kind": [s["kind"] for s in samples],
                      "source": [s["source"] for s in samples], "lang": [s["lang"] for s in samples],
                      "caption": [s["caption"] for s in samples],
                      "dup_of": [s.get("dup_of", "") if s["kind"] == "duplicate" else "" for s in samples]})
    with atomic_open(os.path.join(out_dir, "truth.parquet"), "wb") as f:
        pq.write_table(truth, f)
    counts = {k: int((np.array([s["kind"] for s in samples]) == k).sum()) for k in POOL_KINDS}
    return {"rows": n, "shards": len(range(0, n, shard_size)), "kinds": counts, "seed": seed}


def make_teacher_split(out_dir: str, n: int, seed: int, shard_size: int = 5000) -> dict:
    """Clean pairs (no noise) for the teachers, disjoint from the pool (own rng stream, own digit images)."""
    digits = digit_split(seed)["teacher"]
    samples = []
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_TEACHER, i])
        c = draw_content(rng, digits)
        samples.append({"uid": _uid(rng), "caption": c["caption"], "image": c["image"],
                        "original_width": IMAGE_SIZE, "original_height": IMAGE_SIZE})
    write_shards(samples, out_dir, shard_size)
    return {"rows": n, "seed": seed}
