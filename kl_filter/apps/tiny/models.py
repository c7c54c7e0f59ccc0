"""The tiny track's CLIP models: open_clip configs (student, two teachers), training, encoding, evaluation, checkpoints.

The student is the tiny config of docs/harness.md#the-whole-loop-offline-the-tiny-track; the small teacher stands
in for OpenAI's ViT-B/32 (family b32, 512-d) and
the larger one for ViT-L/14 (family l14, 768-d). :func:`evaluate` computes the ``METRICS`` on
:func:`.evalsets.eval_sets`, plus the zero-shot tasks' macro F1 (``EXTRA_METRICS``, kept in run.json, not in the
results table). :func:`train_clip` trains with open_clip's ``ClipLoss``, or with per-sample weights
(:func:`weighted_clip_loss`, the IWL authors' weighted loss).
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from kl_filter.core.atomic import write_bytes
from kl_filter.core.errors import KLFilterError, MissingDependency

STUDENT = "kl-tiny-student"
TEACHER_S = "kl-tiny-teacher-s"  # stands in for OpenAI ViT-B/32: family b32, 512-d
TEACHER_L = "kl-tiny-teacher-l"  # stands in for OpenAI ViT-L/14: family l14, 768-d
_TEXT = {"context_length": 20, "vocab_size": 49408}
MODEL_CONFIGS = {
    # the tiny config (embed 64, ViT 64 px / patch 16 / 2 layers / width 64, text 2 layers) with a 20-token
    # context instead of 32: the text tower is most of a step's cost on CPU and the pool's captions fit in 20
    STUDENT: {"embed_dim": 64,
              "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
              "text_cfg": {**_TEXT, "width": 64, "heads": 2, "layers": 2}},
    TEACHER_S: {"embed_dim": 512,
                "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
                "text_cfg": {**_TEXT, "width": 64, "heads": 2, "layers": 2}},
    TEACHER_L: {"embed_dim": 768,
                "vision_cfg": {"image_size": 64, "layers": 3, "width": 96, "patch_size": 16, "head_width": 32},
                "text_cfg": {**_TEXT, "width": 96, "heads": 3, "layers": 3}},
}
MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation, as open_clip's preprocess
STD = (0.26862954, 0.26130258, 0.27577711)

METRICS = ["average", "zs_scenes", "zs_digits", "ret_r1", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"]
METRIC_DOC = {
    "average": "mean of zs_scenes, zs_digits and ret_r1",
    "zs_scenes": "zero-shot top-1 accuracy, held-out drawn scenes by shape (6 classes, chance 0.167)",
    "zs_digits": "zero-shot top-1 accuracy, held-out real handwritten digits (10 classes, chance 0.1)",
    "ret_r1": "retrieval recall@1, mean of image→text and text→image",
    "i2t_r1": "image→text recall@1", "i2t_r5": "image→text recall@5",
    "t2i_r1": "text→image recall@1", "t2i_r5": "text→image recall@5",
}
# computed by :func:`evaluate` for every model (kept in run.json), not columns of the results table
EXTRA_METRICS = {
    "zs_scenes_f1": "zero-shot macro F1 over the 6 scene classes (unweighted mean of the per-class F1)",
    "zs_digits_f1": "zero-shot macro F1 over the 10 digit classes (unweighted mean of the per-class F1)",
    "zs_scenes_classes": "how many of the 6 scene classes the zero-shot predictions use (1: one class for every image)",
    "zs_digits_classes": "how many of the 10 digit classes the zero-shot predictions use (1: one class for every image)",
}


def require_torch():
    """(torch, open_clip), or :class:`MissingDependency` with the install hint."""
    try:
        import open_clip
        import torch
    except ImportError as e:
        raise MissingDependency("the tiny track needs: pip install 'kl-filter[train]' "
                                "(torch, open_clip_torch, webdataset, scikit-learn, scikit-image, matplotlib)") from e
    return torch, open_clip


def register_model_configs(directory: str) -> str:
    """Write the track's model configs as json into ``directory`` and register them with open_clip."""
    _, open_clip = require_torch()
    os.makedirs(directory, exist_ok=True)
    for name, cfg in MODEL_CONFIGS.items():
        write_bytes(os.path.join(directory, name + ".json"), (json.dumps(cfg, indent=2) + "\n").encode())
    open_clip.add_model_config(directory)
    return directory


def _to_input(torch, images_u8):
    x = torch.as_tensor(images_u8).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def weighted_clip_loss(image_features, text_features, logit_scale, weights, per_batch: bool = False):
    """The IWL authors' per-sample weighted CLIP loss (written here, not copied), for one batch of B pairs::

        loss = (1/B) Σ_j w_j · ½ (CE_image→text_j + CE_text→image_j)

    (``per_batch``: divided by Σ_j w_j instead of B, the weights self-normalised within the batch, so every step
    carries the same weight mass; not the authors'.)

    with ``CE_image→text_j`` the cross-entropy of image j's logits over the batch's texts against its own text
    (``logits = logit_scale · image_features @ text_features.T``, the features already unit-normalised by the
    model) and ``CE_text→image_j`` the same for text j over the images. ``weights`` (B,) are the batch's
    importance weights as given (the trainer samples uniformly, so the batch loss is an unbiased estimate of the
    w-weighted pool loss; it does not renormalise within the batch). With every w_j = 1 this is open_clip's
    ``ClipLoss`` (the mean of the two mean cross-entropies; tested within 1e-6).
    """
    torch, _ = require_torch()
    f = torch.nn.functional
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    ce_i2t = f.cross_entropy(logits, labels, reduction="none")
    ce_t2i = f.cross_entropy(logits.T, labels, reduction="none")
    w = weights.to(logits.dtype)
    if per_batch:
        return (w * (0.5 * (ce_i2t + ce_t2i))).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
    return (w * (0.5 * (ce_i2t + ce_t2i))).mean()


def check_sample_weights(weights, n: int) -> np.ndarray:
    """``weights`` as a float64 (n,) array of finite non-negative numbers with a positive sum, or one line."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise KLFilterError(f"sample weights have shape {w.shape}, the training set {n} rows")
    if not np.isfinite(w).all() or (w < 0).any():
        raise KLFilterError("sample weights must be finite and >= 0")
    if not w.sum() > 0:
        raise KLFilterError("sample weights are all zero")
    return w


def train_clip(model_name: str, images: np.ndarray, texts: list[str], samples_seen: int, batch_size: int, lr: float,
               seed: int, warmup_frac: float = 0.1, weight_decay: float = 0.2, beta2: float = 0.98,
               weights: np.ndarray | None = None, per_batch: bool = False):
    """Train ``model_name`` from scratch with CLIP's InfoNCE for ``samples_seen`` samples drawn WITH replacement.

    AdamW (no decay on gains, biases, embeddings' positional terms and the logit scale, as open_clip_train),
    linear warmup then cosine decay, logit scale clamped at 100. Returns (model, info).

    ``weights`` (one per row, e.g. IWL's importance weights self-normalised to mean 1 over the training set):
    the batches are drawn exactly as without weights (uniformly, with replacement, the same indices for the same
    seed) and each batch's loss is :func:`weighted_clip_loss` (``per_batch``: self-normalised in each batch);
    without them it is open_clip's ``ClipLoss``. With weights, ``info["weights"]`` also records each batch's
    weight mass Σ_j w_j (mean, std, min, max over the steps) and its effective pairs (Σw)²/Σw² (mean, min): what a
    step of the weighted loss actually trains on.
    """
    torch, open_clip = require_torch()
    n = len(texts)
    if n == 0:
        raise KLFilterError("cannot train on an empty subset")
    w_all = None if weights is None else torch.as_tensor(check_sample_weights(weights, n), dtype=torch.float32)
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name)
    model.train()
    tokenizer = open_clip.get_tokenizer(model_name)
    tokens = tokenizer(texts)
    decay = [p for nm, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in nm
             and "positional_embedding" not in nm and "class_embedding" not in nm]
    ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel is about 25% faster per step on CPU
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    steps = max(1, math.ceil(samples_seen / batch_size))
    warmup = max(1, int(warmup_frac * steps))
    rng = np.random.default_rng([seed, 7])
    images_t = torch.as_tensor(images)
    t0 = time.perf_counter()
    losses, mass, eff = [], [], []
    for step in range(steps):
        cur = lr * (step + 1) / warmup if step < warmup else \
            0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = cur
        idx = torch.as_tensor(rng.integers(0, n, size=batch_size))
        x = _to_input(torch, images_t[idx])
        img, txt, scale = model(x, tokens[idx])[:3]
        if w_all is None:
            loss = loss_fn(img, txt, scale)
        else:
            wb = w_all[idx]
            loss = weighted_clip_loss(img, txt, scale, wb, per_batch)
            s1, s2 = float(wb.double().sum()), float((wb.double() ** 2).sum())
            mass.append(s1)
            eff.append(s1 * s1 / s2 if s2 > 0 else 0.0)
        if not torch.isfinite(loss):
            raise KLFilterError(f"training {model_name} diverged at step {step} (loss {loss.item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
    model.eval()
    info = {"steps": steps, "samples_seen": steps * batch_size, "unique_samples": n, "epochs": steps * batch_size / n,
            "final_loss": float(np.mean(losses[-max(1, steps // 10):])), "logit_scale": float(model.logit_scale.detach().exp()),
            "seconds": round(time.perf_counter() - t0, 2)}
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        info["loss"] = "weighted_clip_per_batch" if per_batch else "weighted_clip"
        m = np.asarray(mass)
        info["weights"] = {"mean": float(w.mean()), "max": float(w.max()), "min": float(w.min()),
                           "effective_sample_size": float(w.sum() ** 2 / np.dot(w, w)),
                           "batch_mass": {"mean": float(m.mean()), "std": float(m.std()), "min": float(m.min()),
                                          "max": float(m.max())},
                           "batch_effective_pairs": {"mean": float(np.mean(eff)), "min": float(np.min(eff))}}
    else:
        info["loss"] = "clip"
    return model, info


def _encode_images(torch, model, images, batch=512):
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(torch.nn.functional.normalize(model.encode_image(_to_input(torch, images[i: i + batch])), dim=-1))
    return torch.cat(out)


def _encode_texts(torch, model, tokenizer, texts, batch=512):
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            out.append(torch.nn.functional.normalize(model.encode_text(tokenizer(texts[i: i + batch])), dim=-1))
    return torch.cat(out)


def macro_f1(pred, labels, num_classes: int) -> float:
    """Macro F1 over the classes 0..num_classes-1: the unweighted mean of each class's F1 = 2TP / (2TP + FP + FN),
    a class with no true and no predicted row counting 0 (as ``sklearn.metrics.f1_score(average="macro",
    labels=range(num_classes), zero_division=0)``; tested)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    k = np.arange(num_classes)[:, None]
    tp = ((pred == k) & (labels == k)).sum(1)
    fp = ((pred == k) & (labels != k)).sum(1)
    fn = ((pred != k) & (labels == k)).sum(1)
    den = 2 * tp + fp + fn
    return float(np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0).mean())


def evaluate(model, model_name: str, evals: dict) -> dict:
    """Zero-shot accuracy (scenes, digits) and retrieval recall@1/5 (both ways), all in [0, 1]; plus each
    zero-shot task's macro F1 (``zs_{task}_f1``) and the number of classes its predictions use
    (``zs_{task}_classes``, a collapse to one class shows as 1; :data:`EXTRA_METRICS`)."""
    torch, open_clip = require_torch()
    tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    out = {}
    for task in ("scenes", "digits"):
        ev = evals[task]
        prompts = ev["prompts"]
        flat = [p for ps in prompts for p in ps]
        t = _encode_texts(torch, model, tokenizer, flat).view(len(prompts), len(prompts[0]), -1).mean(1)
        t = torch.nn.functional.normalize(t, dim=-1)
        im = _encode_images(torch, model, ev["images"])
        pred = (im @ t.T).argmax(1).numpy()
        out[f"zs_{task}"] = float((pred == ev["labels"]).mean())
        out[f"zs_{task}_f1"] = macro_f1(pred, ev["labels"], len(prompts))
        out[f"zs_{task}_classes"] = int(len(np.unique(pred)))
    ev = evals["retrieval"]
    im = _encode_images(torch, model, ev["images"])
    tx = _encode_texts(torch, model, tokenizer, ev["captions"])
    sim = (im @ tx.T).numpy()
    n = len(sim)
    truth = np.arange(n)
    # rank of the true partner (0 = first); ties count against the model
    i2t = (sim > sim[truth, truth][:, None]).sum(1)
    t2i = (sim.T > sim[truth, truth][:, None]).sum(1)
    for k in (1, 5):
        out[f"i2t_r{k}"] = float((i2t < k).mean())
        out[f"t2i_r{k}"] = float((t2i < k).mean())
    out["ret_r1"] = (out["i2t_r1"] + out["t2i_r1"]) / 2
    out["average"] = (out["zs_scenes"] + out["zs_digits"] + out["ret_r1"]) / 3
    return out


def save_checkpoint(torch, model, model_name: str, path: str) -> None:
    import io

    buf = io.BytesIO()
    torch.save({"name": model_name, "state_dict": model.state_dict()}, buf)
    write_bytes(path, buf.getvalue())
