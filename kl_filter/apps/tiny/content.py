"""The tiny track's image-text content: what a sample shows and what its caption says (no noise here).

Everything is generated from packages only (no download), and every random draw is seeded: sample ``i``
of split ``s`` uses ``np.random.default_rng([seed, s, i])`` (the ``SPLIT_*`` stream ids below), so a sample
does not depend on how many others are drawn.

Sources of (image, caption) content:

* scenes: shapes drawn with PIL (6 shapes x 8 colours, 1-3 of them, optionally two groups in a spatial relation)
  with compositional captions, e.g. "two red circles above a blue square";
* digits: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits) upscaled, "a handwritten digit seven";
  the digits are split once (seeded) into eval / teacher / pool parts that never share an image;
* photos: scikit-image's sample photos (``skimage.data``) with hand-written captions, random crops and flips.

:func:`translate` gives a content's caption in German, French or Spanish (single-group scenes and digits).
Images are 64x64 uint8 RGB arrays (``IMAGE_SIZE``, the models' input size).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SIZE = 64
# rng stream ids of every split (pool, teacher split, eval sets, NormSim/VAS target renders, digit split), kept in
# one place so they stay distinct
SPLIT_TEACHER, SPLIT_POOL, SPLIT_EVAL_SCENES, SPLIT_EVAL_RETRIEVAL, SPLIT_TARGETS, SPLIT_DIGITS = 1, 2, 3, 4, 5, 99
DIGIT_EVAL, DIGIT_TEACHER = 360, 540  # of 1,797; the rest (897) feed the pool

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond"]
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
           "purple": (140, 60, 170), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20)}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
RELATIONS = ["above", "below", "to the left of", "to the right of"]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

SOURCE_MIX = {"scene": 0.60, "digit": 0.30, "photo": 0.10}

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
    from PIL import ImageDraw

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
def digits_dataset() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits: float32 images [n, 8, 8] in [0, 1], int64 labels (cached)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def digit_split(seed: int) -> dict:
    """Disjoint indices of the 1,797 digits: eval, teacher, pool (seeded permutation).

    ``teacher`` is the digit task's TRAIN split: the teachers train on it, and the track's informed-target
    filters take their NormSim targets from it (:mod:`.targets`); ``eval`` is only ever shown to evaluation."""
    perm = np.random.default_rng([seed, SPLIT_DIGITS]).permutation(len(digits_dataset()[1]))
    return {"eval": perm[:DIGIT_EVAL], "teacher": perm[DIGIT_EVAL: DIGIT_EVAL + DIGIT_TEACHER],
            "pool": perm[DIGIT_EVAL + DIGIT_TEACHER:]}


def render_digit(rng, index: int, jitter: bool = True) -> np.ndarray:
    from PIL import Image

    images, _ = digits_dataset()
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
    label = int(digits_dataset()[1][i])
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
