"""The tiny track's held-out evaluation sets (never in the pool or the teacher split) and zero-shot prompts."""

from __future__ import annotations

import numpy as np

from kl_filter.apps.tiny.content import (DIGIT_WORDS, SHAPES, SPLIT_EVAL_RETRIEVAL, SPLIT_EVAL_SCENES, digit_split, digits_dataset,
                      draw_scene_content, plural, render_digit)

# zero-shot prompts (evaluation only)
SCENE_TEMPLATES = ["a {c}", "a picture of a {c}", "an illustration of {p}", "{p} on a plain background"]
DIGIT_TEMPLATES = ["a handwritten digit {w}", "the number {d}", "a handwritten {w}", "the digit {d} written by hand"]


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
    dg_lab = digits_dataset()[1][idx]
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
