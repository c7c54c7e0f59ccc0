"""The tiny track's data: an offline image-text pool with web-like noise, a clean teacher split, and eval sets.

Everything is generated here, from packages only (no download), and every random draw is seeded: sample ``i``
of split ``s`` uses ``np.random.default_rng([seed, s, i])``, so a sample does not depend on how many others
are drawn.

Sources of (image, caption) content:

* scenes: shapes drawn with PIL (6 shapes x 8 colours, 1-3 of them, optionally two groups in a spatial relation)
  with compositional captions, e.g. "two red circles above a blue square";
* digits: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits) upscaled, "a handwritten digit seven";
  the digits are split once (seeded) into eval / teacher / pool parts that never share an image;
* photos: scikit-image's sample photos (``skimage.data``) with hand-written captions, random crops and flips.

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

Images are stored as 64x64 JPEGs (the models' input size); ``original_width``/``original_height`` in the json
are nominal web sizes (220-1600 px, aspect <= 2.5) except for tiny and banner samples.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tarfile

import numpy as np

IMAGE_SIZE = 64
SPLIT_TEACHER, SPLIT_POOL, SPLIT_EVAL_SCENES, SPLIT_EVAL_RETRIEVAL, SPLIT_DIGITS = 1, 2, 3, 4, 99
DIGIT_EVAL, DIGIT_TEACHER = 360, 540  # of 1,797; the rest (897) feed the pool

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond"]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
           "purple": (140, 60, 170), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20)}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
RELATIONS = ["above", "below", "to the left of", "to the right of"]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

POOL_KINDS = {"clean": 0.42, "mismatch": 0.15, "generic": 0.10, "foreign": 0.10, "tiny": 0.07, "banner": 0.03,
              "junk": 0.05, "duplicate": 0.08}
SOURCE_MIX = {"scene": 0.60, "digit": 0.30, "photo": 0.10}

# zero-shot prompts (evaluation only)
SCENE_TEMPLATES = ["a {c}", "a picture of a {c}", "an illustration of {p}", "{p} on a plain background"]
DIGIT_TEMPLATES = ["a handwritten digit {w}", "the number {d}", "a handwritten {w}", "the digit {d} written by hand"]

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
PHOTO_CAPTIONS = {
    "astronaut": ["a portrait of an astronaut in a white space suit", "an astronaut with an american flag"],
    "camera": ["a black and white photo of a man with a camera", "a photographer with a tripod"],
    "chelsea": ["a tabby cat looking at the camera", "a close-up photo of a ginger cat"],
    "coffee": ["a cup of coffee on a saucer", "a red cup of black coffee"],
    "coins": ["old coins on a table", "a black and white photo of many coins"],
    "horse": ["the silhouette of a horse", "a black horse on a white background"],
    "moon": ["the surface of the moon", "craters on the moon"],
    "page": ["a page of printed text", "a scanned page of an old book"],
    "text": ["printed letters on a sign", "a photo of text and numbers"],
    "rocket": ["a rocket on the launch pad", "a space shuttle before launch"],
    "hubble_deep_field": ["galaxies in deep space", "a telescope image of distant galaxies"],
    "immunohistochemistry": ["a microscope image of stained tissue", "cells stained brown and blue"],
    "retina": ["a photo of the retina of an eye", "blood vessels in the back of the eye"],
    "clock": ["a clock on a wall", "a blurry photo of a clock"],
    "brick": ["a brick wall", "a close-up of grey bricks"],
    "grass": ["a close-up of grass", "green grass texture"],
    "gravel": ["a close-up of gravel", "small stones on the ground"],
    "colorwheel": ["a colour wheel", "a circle with all the colours of the rainbow"],
    "checkerboard": ["a black and white checkerboard", "a chessboard pattern"],
    "cell": ["a microscope image of a cell", "a living cell under a microscope"],
    "stereo_motorcycle": ["a red motorcycle in a garage", "a motorbike parked indoors"],
    "lfw_subset": ["a close-up photo of a person's face", "a portrait of a man"],
}

# --- translations (single groups and digits; German nominative, French and Spanish agreement) -------------------
DE_SHAPES = {"circle": ("m", "Kreis", "Kreise"), "square": ("n", "Quadrat", "Quadrate"),
             "triangle": ("n", "Dreieck", "Dreiecke"), "star": ("m", "Stern", "Sterne"),
             "cross": ("n", "Kreuz", "Kreuze"), "diamond": ("f", "Raute", "Rauten")}
DE_COLOURS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
              "orange": "orangefarben", "white": "weiß", "black": "schwarz"}
FR_SHAPES = {"circle": ("m", "cercle", "cercles"), "square": ("m", "carré", "carrés"),
             "triangle": ("m", "triangle", "triangles"), "star": ("f", "étoile", "étoiles"),
             "cross": ("f", "croix", "croix"), "diamond": ("m", "losange", "losanges")}
FR_COLOURS = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
              "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"), "orange": ("orange", "orange"),
              "white": ("blanc", "blanche"), "black": ("noir", "noire")}
ES_SHAPES = {"circle": ("m", "círculo", "círculos"), "square": ("m", "cuadrado", "cuadrados"),
             "triangle": ("m", "triángulo", "triángulos"), "star": ("f", "estrella", "estrellas"),
             "cross": ("f", "cruz", "cruces"), "diamond": ("m", "rombo", "rombos")}
ES_COLOURS = {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
              "orange": "naranja", "white": "blanco", "black": "negro"}
DIGIT_WORDS_FOREIGN = {
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
}


def _de(count, colour, shape):
    g, sg, pl = DE_SHAPES[shape]
    adj = DE_COLOURS[colour]
    if count == 1:
        art, end = {"m": ("ein", "er"), "n": ("ein", "es"), "f": ("eine", "e")}[g]
        return f"{art} {adj}{end} {sg} auf grauem Hintergrund"
    return f"{['', '', 'zwei', 'drei'][count]} {adj}e {pl} auf grauem Hintergrund"


def _fr(count, colour, shape):
    g, sg, pl = FR_SHAPES[shape]
    adj = FR_COLOURS[colour][0 if g == "m" else 1]
    if count == 1:
        return f"{'un' if g == 'm' else 'une'} {sg} {adj} sur fond gris"
    if not adj.endswith("s") and colour != "orange":
        adj += "s"
    return f"{['', '', 'deux', 'trois'][count]} {pl} {adj} sur fond gris"


def _es(count, colour, shape):
    g, sg, pl = ES_SHAPES[shape]
    adj = ES_COLOURS[colour]
    if adj.endswith("o") and g == "f":
        adj = adj[:-1] + "a"
    if count == 1:
        return f"{'un' if g == 'm' else 'una'} {sg} {adj} sobre fondo gris"
    if colour != "orange":
        adj = adj + ("es" if adj.endswith("l") else "s")
    return f"{['', '', 'dos', 'tres'][count]} {pl} {adj} sobre fondo gris"


def translate(content: dict, lang: str) -> str | None:
    """The content's caption in German/French/Spanish (single-group scenes and digits), else None."""
    if content["source"] == "scene" and len(content["groups"]) == 1:
        count, colour, shape = content["groups"][0]
        return {"de": _de, "fr": _fr, "es": _es}[lang](count, colour, shape)
    if content["source"] == "digit":
        w = DIGIT_WORDS_FOREIGN[lang][content["label"]]
        return {"de": f"eine handgeschriebene Ziffer {w}", "fr": f"le chiffre {w} écrit à la main",
                "es": f"el número {w} escrito a mano"}[lang]
    return None


# --- scenes -------------------------------------------------------------------------------------------------
def plural(shape: str) -> str:
    return shape + ("es" if shape == "cross" else "s")


def noun_phrase(count: int, colour: str, shape: str) -> str:
    if count == 1:
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
    return f"{COUNT_WORDS[count]} {colour} {plural(shape)}"


def _shape_points(shape: str, cx: float, cy: float, r: float):
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else 0.42 * r
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    raise ValueError(shape)


def draw_shape(draw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = 0.82 * r
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "cross":
        t = 0.3 * r
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r), fill=fill)


def _background(rng, scale: int) -> "Image.Image":
    from PIL import Image

    base = rng.integers(80, 176)
    tint = rng.integers(-12, 13, size=3)
    noise = rng.integers(-8, 9, size=(scale // 4, scale // 4, 1), dtype=np.int16)  # grain, upscaled
    arr = np.clip(base + tint + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").resize((scale, scale), Image.BILINEAR)


def _cells(rng, region: str, count: int):
    """``count`` distinct cells of a 2x2 grid inside a region (all, top, bottom, left, right)."""
    rows = {"all": [0, 1], "top": [0], "bottom": [1], "left": [0, 1], "right": [0, 1]}[region]
    cols = {"all": [0, 1], "top": [0, 1], "bottom": [0, 1], "left": [0], "right": [1]}[region]
    cells = [(r, c) for r in rows for c in cols]
    idx = rng.choice(len(cells), size=count, replace=False)
    return [cells[i] for i in idx]


def render_scene(rng, groups, relation: str | None) -> np.ndarray:
    """uint8 [64, 64, 3] of one or two groups of shapes; with two groups, group 0 is ``relation`` group 1."""
    from PIL import Image, ImageDraw

    scale = 2 * IMAGE_SIZE
    img = _background(rng, scale)
    draw = ImageDraw.Draw(img)
    cell = scale / 2
    if relation is None:
        regions = ["all"]
    else:
        regions = {"above": ["top", "bottom"], "below": ["bottom", "top"], "to the left of": ["left", "right"],
                   "to the right of": ["right", "left"]}[relation]
    for (count, colour, shape), region in zip(groups, regions):
        for r, c in _cells(rng, region, count):
            cx = (c + 0.5) * cell + rng.uniform(-0.1, 0.1) * cell
            cy = (r + 0.5) * cell + rng.uniform(-0.1, 0.1) * cell
            draw_shape(draw, shape, cx, cy, rng.uniform(0.28, 0.38) * cell, COLOURS[colour])
    return np.asarray(img.reduce(scale // IMAGE_SIZE))  # box filter: anti-aliased and fast


def draw_scene_content(rng, relational_share: float = 0.5, single_shape: str | None = None,
                       render: bool = True) -> dict:
    def group():
        return (int(rng.integers(1, 4)), str(rng.choice(list(COLOURS))), single_shape or str(rng.choice(SHAPES)))

    if single_shape is None and rng.random() < relational_share:
        a = group()
        b = group()
        while b[1:] == a[1:]:
            b = group()
        a, b = (min(a[0], 2), a[1], a[2]), (min(b[0], 2), b[1], b[2])  # 2 cells per side
        rel = str(rng.choice(RELATIONS))
        groups, caption = [a, b], f"{noun_phrase(*a)} {rel} {noun_phrase(*b)}"
    else:
        rel = None
        groups = [group()]
        caption = noun_phrase(*groups[0])
    return {"source": "scene", "groups": groups, "relation": rel, "caption": caption,
            "image": render_scene(rng, groups, rel) if render else None}


# --- digits and photos ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def digit_split(seed: int) -> dict:
    """Disjoint indices of the 1,797 digits: eval, teacher, pool (seeded permutation)."""
    perm = np.random.default_rng([seed, SPLIT_DIGITS]).permutation(len(_digits()[1]))
    return {"eval": perm[:DIGIT_EVAL], "teacher": perm[DIGIT_EVAL: DIGIT_EVAL + DIGIT_TEACHER],
            "pool": perm[DIGIT_EVAL + DIGIT_TEACHER:]}


def render_digit(rng, index: int, jitter: bool = True) -> np.ndarray:
    from PIL import Image

    images, _ = _digits()
    x = images[index]
    ink, paper = (np.array([20.0, 20, 30]), np.array([235.0, 235, 225]))
    if jitter and rng.random() < 0.3:
        ink, paper = paper, ink
    rgb = (paper + x[..., None] * (ink - paper)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB").resize((48, 48), Image.BICUBIC)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(int(v) for v in paper))
    off = rng.integers(0, 17, size=2) if jitter else (8, 8)
    canvas.paste(img, (int(off[0]), int(off[1])))
    return np.asarray(canvas)


def digit_caption(rng, label: int) -> str:
    t = int(rng.integers(0, 4))
    w = DIGIT_WORDS[label]
    return ["a handwritten digit {w}", "the number {d} written by hand", "a handwritten {w}",
            "a scan of a handwritten {w}"][t].format(w=w, d=label)


def draw_digit_content(rng, indices: np.ndarray, render: bool = True) -> dict:
    i = int(rng.choice(indices))
    label = int(_digits()[1][i])
    return {"source": "digit", "label": label, "index": i, "caption": digit_caption(rng, label),
            "image": render_digit(rng, i) if render else None}


@functools.lru_cache(maxsize=1)
def _photos() -> dict:
    """name -> list of uint8 RGB arrays (longest side at most 256 px) of the skimage photos available offline."""
    import skimage.data as data
    from PIL import Image

    out: dict = {}
    for name in PHOTO_CAPTIONS:
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a sample that needs a download (pooch) is skipped
            continue
        if name == "stereo_motorcycle":
            arr = arr[0]
        arrs = list(arr) if name == "lfw_subset" else [arr]
        for a in arrs:
            a = np.asarray(a)
            if a.dtype == bool:
                a = np.where(a, 255, 0).astype(np.uint8)
            if a.dtype != np.uint8:
                a = a.astype(np.float32)
                a = (255 * (a - a.min()) / max(float(a.max() - a.min()), 1e-6)).astype(np.uint8)
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            if a.shape[2] == 4:
                alpha = a[..., 3:4].astype(np.float32) / 255
                a = (a[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
            a = np.ascontiguousarray(a[..., :3])
            if max(a.shape[:2]) > 256:  # downscale once: crops end at 64 px anyway
                f = 256 / max(a.shape[:2])
                a = np.asarray(Image.fromarray(a).resize((max(1, round(a.shape[1] * f)),
                                                          max(1, round(a.shape[0] * f))), Image.LANCZOS))
            out.setdefault(name, []).append(a)
    return out


def draw_photo_content(rng, render: bool = True) -> dict:
    from PIL import Image

    photos = _photos()
    name = sorted(photos)[int(rng.integers(len(photos)))]  # each source equally likely (lfw has 200 faces)
    group = photos[name]
    arr = group[int(rng.integers(len(group)))]
    caps = PHOTO_CAPTIONS[name]
    if not render:
        return {"source": "photo", "name": name, "caption": caps[int(rng.integers(len(caps)))], "image": None}
    h, w = arr.shape[:2]
    side = int(min(h, w) * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = Image.fromarray(arr[y: y + side, x: x + side]).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return {"source": "photo", "name": name, "caption": caps[int(rng.integers(len(caps)))], "image": np.asarray(img)}


def draw_content(rng, digit_indices: np.ndarray, mix=SOURCE_MIX, render: bool = True) -> dict:
    """One (image, caption) content draw; ``render=False`` draws the caption only (for mismatched captions)."""
    src = rng.choice(list(mix), p=list(mix.values()))
    if src == "scene":
        return draw_scene_content(rng, render=render)
    if src == "digit":
        return draw_digit_content(rng, digit_indices, render=render)
    return draw_photo_content(rng, render=render)


# --- pool ---------------------------------------------------------------------------------------------------------
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


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def write_shards(samples, out_dir: str, shard_size: int, prefix_url: str = "https://tiny.example") -> list[str]:
    """Write samples ({uid, caption, image, original_width/height, ...}) as DataComp-style webdataset tars."""
    from ..atomic import atomic_open, write_json

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for s0 in range(0, len(samples), shard_size):
        shard = s0 // shard_size
        path = os.path.join(out_dir, f"{shard:08d}.tar")
        chunk = samples[s0: s0 + shard_size]
        with atomic_open(path, "wb") as f:
            with tarfile.open(fileobj=f, mode="w") as tf:
                for j, s in enumerate(chunk):
                    key = f"{shard:04d}{j:05d}"
                    meta = {"uid": s["uid"], "url": f"{prefix_url}/{s['uid'][:12]}.jpg", "caption": s["caption"],
                            "key": key, "original_width": int(s["original_width"]),
                            "original_height": int(s["original_height"]), "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                            "status": "success"}
                    _add(tf, key + ".jpg", encode_jpeg(s["image"]))
                    _add(tf, key + ".txt", s["caption"].encode())
                    _add(tf, key + ".json", json.dumps(meta).encode())
        write_json(os.path.join(out_dir, f"{shard:08d}_stats.json"),
                   {"count": len(chunk), "successes": len(chunk), "failed_to_download": 0, "failed_to_resize": 0})
        paths.append(path)
    return paths


def make_pool(out_dir: str, n: int, seed: int, shard_size: int = 2000) -> dict:
    """Write an ``n``-sample noisy pool as tars into ``out_dir`` and ``truth.parquet`` (uid, kind, source, lang)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..atomic import atomic_open

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
                      "caption": [s["caption"] for s in samples]})
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


# --- evaluation sets (never in the pool or the teacher split) -------------------------------------------------------
def eval_sets(seed: int, scenes_per_class: int, digits: int, retrieval: int) -> dict:
    """Zero-shot scenes (by shape), zero-shot digits, and retrieval pairs, as uint8 images + labels/captions."""
    sc_img, sc_lab = [], []
    for c, shape in enumerate(SHAPES):
        for j in range(scenes_per_class):
            rng = np.random.default_rng([seed, SPLIT_EVAL_SCENES, c, j])
            sc_img.append(draw_scene_content(rng, single_shape=shape)["image"])
            sc_lab.append(c)
    idx = digit_split(seed)["eval"][:digits]
    rng = np.random.default_rng([seed, SPLIT_EVAL_SCENES, 99])
    dg_img = [render_digit(rng, int(i)) for i in idx]
    dg_lab = _digits()[1][idx]
    rt_img, rt_cap, seen = [], [], set()
    j = 0
    while len(rt_img) < retrieval:
        rng = np.random.default_rng([seed, SPLIT_EVAL_RETRIEVAL, j])
        j += 1
        c = draw_scene_content(rng, relational_share=0.7)
        if c["caption"] in seen:  # unique captions: a retrieval hit is unambiguous
            continue
        seen.add(c["caption"])
        rt_img.append(c["image"])
        rt_cap.append(c["caption"])
    return {
        "scenes": {"images": np.stack(sc_img), "labels": np.array(sc_lab), "classes": SHAPES,
                   "prompts": [[t.format(c=s, p=plural(s)) for t in SCENE_TEMPLATES] for s in SHAPES]},
        "digits": {"images": np.stack(dg_img), "labels": np.asarray(dg_lab),
                   "classes": DIGIT_WORDS,
                   "prompts": [[t.format(w=DIGIT_WORDS[d], d=d) for t in DIGIT_TEMPLATES] for d in range(10)]},
        "retrieval": {"images": np.stack(rt_img), "captions": rt_cap},
    }
