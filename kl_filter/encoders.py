"""Encoding images and text with an open_clip model from a local checkpoint (nothing is downloaded).

Used by the IWL scorer (its prompts), by ``kl-filter embed`` (:mod:`kl_filter.pool.embed`: a pool's metadata for
your own shards) and by the tiny track. The model's temperature is read from the checkpoint: ``logit_scale =
exp(model.logit_scale)`` and ``logit_bias`` for sigmoid-loss models. torch and open_clip are imported on use.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import re
from dataclasses import dataclass, field

import numpy as np

from kl_filter.core.errors import KLFilterError, MissingDependency

# DataComp's family names for OpenAI's models; any other architecture gets its lowercased alphanumerics.
KNOWN_FAMILIES = {"vit-b-32": "b32", "vit-l-14": "l14", "vit-b-16": "b16", "vit-l-14-336": "l14336"}
FAMILY_RE = re.compile(r"^[a-z0-9]+$")


@dataclass
class Sample:
    key: str
    uid: str
    text: str
    image: bytes
    meta: dict = field(default_factory=dict)


def default_family(model: str) -> str:
    """``ViT-B-32`` -> ``b32``, ``ViT-L-14`` -> ``l14``; otherwise the lowercased alphanumerics of the name."""
    m = model.lower()
    return KNOWN_FAMILIES.get(m) or re.sub(r"[^a-z0-9]", "", m)


def check_family(family: str) -> str:
    if not FAMILY_RE.match(family or ""):
        raise KLFilterError(f"--family must be lowercase letters and digits (it prefixes npz keys as "
                            f"<family>_img), got {family!r}")
    return family


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise KLFilterError("--device cuda but torch sees no GPU")
    if device not in ("cpu", "cuda"):
        raise KLFilterError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


class Embedder:
    """An open_clip model from a local checkpoint, with its eval transform and tokenizer."""

    def __init__(self, model: str, checkpoint: str, device: str = "auto", model_config: str | list | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import open_clip
            import torch
        except ImportError as e:
            raise MissingDependency("embedding needs: pip install 'kl-filter[train]' (torch, open_clip_torch)") from e
        for cfg in ([model_config] if isinstance(model_config, str) else (model_config or [])):
            if not os.path.exists(cfg):
                raise KLFilterError("model config not found", cfg)
            open_clip.add_model_config(cfg)
        if model not in open_clip.list_models():
            raise KLFilterError(f"unknown open_clip architecture {model!r} (register custom ones with --model_config)")
        if not checkpoint or not os.path.isfile(checkpoint):
            raise KLFilterError("checkpoint not found (a local file is required; pretrained tags are not "
                                "downloaded)", checkpoint)
        self.device = resolve_device(device)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=checkpoint, device=self.device)
        except Exception as e:  # noqa: BLE001 - torch.load and open_clip fail in many types (pickle, assert, ...)
            why = (str(e).splitlines() or [type(e).__name__])[0][:300] or type(e).__name__
            raise KLFilterError(f"cannot load {model!r} from this checkpoint ({why})", checkpoint) from e
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.torch = torch
        self.name = model
        self.logit_scale, self.logit_bias = _temperature(self.model)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Float32 unit text embeddings [n, d] from the text tower (``embed``'s captions, IWL's prompts)."""
        torch = self.torch
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            ft = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(ft, dim=-1).cpu().numpy()

    def _decode(self, data: bytes):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
            tensor = self.preprocess(im.convert("RGB"))
        return tensor, size

    def embed(self, samples: list[Sample], batch_size: int, path: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(img float32 unit [n, d], txt float32 unit [n, d], decoded (width, height) int64 [n, 2])."""
        torch = self.torch
        n = len(samples)
        img_out, txt_out, sizes = [], [], np.zeros((n, 2), dtype=np.int64)
        with cf.ThreadPoolExecutor(2) as ex:
            for lo in range(0, n, batch_size):
                batch = samples[lo: lo + batch_size]
                try:
                    decoded = list(ex.map(lambda s: self._decode(s.image), batch))
                except Exception as e:  # noqa: BLE001 - PIL raises many types
                    raise KLFilterError(f"undecodable image in samples {lo}..{lo + len(batch) - 1} ({e})", path) from e
                sizes[lo: lo + len(batch)] = [d[1] for d in decoded]
                images = torch.stack([d[0] for d in decoded]).to(self.device)
                with torch.inference_mode():
                    fi = self.model.encode_image(images).float()
                img_out.append(torch.nn.functional.normalize(fi, dim=-1).cpu().numpy())
                txt_out.append(self.encode_text([s.text for s in batch]))
        if not n:
            d = int(getattr(self.model, "embed_dim", 0) or self.model.text_projection.shape[-1])
            return np.zeros((0, d), np.float32), np.zeros((0, d), np.float32), sizes
        img, txt = np.concatenate(img_out), np.concatenate(txt_out)
        if not (np.isfinite(img).all() and np.isfinite(txt).all()):
            raise KLFilterError("the model produced NaN/inf embeddings", path)
        return img, txt, sizes


def _temperature(model) -> tuple[float, float | None]:
    """(exp(logit_scale), logit_bias or None) of an open_clip model, as float64 from the stored parameters."""
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        raise KLFilterError(f"{type(model).__name__} has no logit_scale: not a CLIP model")
    bias = getattr(model, "logit_bias", None)
    value = float(np.exp(np.float64(scale.detach().float().cpu().item())))
    return value, None if bias is None else float(bias.detach().float().cpu().item())
