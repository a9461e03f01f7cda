"""OpenCLIP models from local weights, and the image embeddings the CLIP scorers share.

A CLIP model spec (`clip_models.<name>` in the config) says where the weights are, in one of
three ways; nothing is ever downloaded:

- `weights: DIR`: an OpenCLIP directory as on the Hugging Face hub (`open_clip_config.json` +
  `open_clip_model.safetensors`);
- `weights: FILE` with `arch`: a checkpoint file for a built-in OpenCLIP architecture
  (`.safetensors`, or a `.bin`/`.pt` state dict read with `torch.load(weights_only=True)`);
- `hub_id: ORG/REPO`, or `arch` + `pretrained` (an OpenCLIP tag such as `openai`, which names
  its hub repo): resolved from the local Hugging Face cache only (local_files_only=True).

Embeddings of an image set are computed once per (image set, CLIP model) and stored as
`results/embeddings/<model>/<variant>/<promptset>/<clip_model>.safetensors`: one L2-normalised
float32 row per image of index.csv, in index order, with the file names and the model spec in
the safetensors metadata so a reader can check they belong to the image set it scores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from editrobust.io import atomic_path
from editrobust.scoring.common import WeightsUnavailable, cached_hub_files, load_images

HF_FILES = ("open_clip_config.json", "open_clip_model.safetensors")
EMBEDDING_KEY = "image_embeds"
BATCH = 32


@dataclass
class ClipModel:
    model: object  # open_clip CLIP
    preprocess: object  # PIL image -> tensor (OpenCLIP's preprocess_val)
    tokenizer: object
    description: str  # what was loaded, recorded in score files

    def encode_texts(self, texts: list[str]):
        import torch

        device = next(self.model.parameters()).device
        with torch.no_grad():
            t = self.model.encode_text(self.tokenizer(list(texts)).to(device))
        return torch.nn.functional.normalize(t.float(), dim=-1).cpu()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())


def describe(spec: dict) -> str:
    """A short name of a spec for score files: `vitb32(ViT-B-32:openai)`."""
    if spec.get("hub_id"):
        src = f"hf:{spec['hub_id']}"
    elif spec.get("pretrained"):
        src = f"{spec.get('arch')}:{spec['pretrained']}"
    elif spec.get("random_seed") is not None and not spec.get("weights"):
        src = f"{spec.get('arch')}:random-seed-{spec['random_seed']}"
    else:
        src = f"{spec.get('arch') or 'local-dir'}:{spec.get('weights')}"
    return f"{spec.get('name', '?')}({src})"


def _cached_hub_dir(repo_id: str, spec_name: str) -> Path:
    """The snapshot directory of an OpenCLIP hub repo, from the local cache only."""
    paths = cached_hub_files(repo_id, HF_FILES, f"clip_models.{spec_name}",
                             f"download those files into a directory and give it as clip_models.{spec_name}.weights")
    if len({p.parent for p in paths}) != 1:
        raise WeightsUnavailable(f"clip_models.{spec_name}: the cached files of {repo_id!r} are in different snapshots: {paths}")
    return paths[0].parent


def resolve(spec: dict) -> tuple[str, str | None, dict]:
    """(open_clip model name, pretrained file or None, extra create_model kwargs) for a spec,
    touching only local files; WeightsUnavailable names what is missing."""
    name = spec.get("name", "?")
    kwargs: dict = {}
    if spec.get("weights"):
        path = Path(os.path.expanduser(spec["weights"]))
        if path.is_dir():
            missing = [f for f in HF_FILES if not (path / f).is_file()]
            if missing:
                raise WeightsUnavailable(f"clip_models.{name}.weights: {path} lacks {', '.join(missing)} "
                                         f"(an OpenCLIP directory holds {' and '.join(HF_FILES)})")
            return f"local-dir:{path}", None, kwargs
        if not path.is_file():
            raise WeightsUnavailable(f"clip_models.{name}.weights: {path} does not exist; put the OpenCLIP "
                                     f"checkpoint there (a directory with {' and '.join(HF_FILES)}, or a "
                                     f".safetensors file with `arch`)")
        if not spec.get("arch"):
            raise ValueError(f"clip_models.{name}: a weights file ({path}) needs `arch` (an OpenCLIP architecture)")
        return spec["arch"], str(path), kwargs
    if spec.get("hub_id"):
        return f"local-dir:{_cached_hub_dir(spec['hub_id'], name)}", None, kwargs
    if spec.get("arch") and spec.get("random_seed") is not None:
        return spec["arch"], None, kwargs  # random weights: load_clip seeds them
    if spec.get("arch") and spec.get("pretrained"):
        import open_clip

        tag = open_clip.get_pretrained_cfg(spec["arch"], spec["pretrained"])
        if not tag or not tag.get("hf_hub"):
            raise ValueError(f"clip_models.{name}: {spec['arch']}/{spec['pretrained']} is not an OpenCLIP "
                             f"pretrained tag with a hub repo; give `hub_id` or `weights` instead")
        # The tag's activation (OpenAI's weights use QuickGELU), in case the repo config omits it.
        kwargs["force_quick_gelu"] = bool(tag.get("quick_gelu", False))
        return f"local-dir:{_cached_hub_dir(tag['hf_hub'].rstrip('/'), name)}", None, kwargs
    raise ValueError(f"clip_models.{name}: give `weights` (a path), `hub_id`, `arch` + `pretrained`, or `arch` + "
                     f"`random_seed`")


def load_clip(spec: dict, device: str = "cpu") -> ClipModel:
    """The OpenCLIP model, its evaluation preprocessing and tokenizer, from local files only."""
    import open_clip

    model_name, pretrained, kwargs = resolve(spec)
    if spec.get("random_seed") is not None:
        import torch

        torch.manual_seed(int(spec["random_seed"]))
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, device=device, weights_only=True, **kwargs)
    model.eval()
    return ClipModel(model, preprocess, open_clip.get_tokenizer(model_name), describe(spec))


def compute_image_embeddings(clip: ClipModel, images) -> np.ndarray:
    """L2-normalised image embeddings (N, D) float32 of uint8 RGB arrays, in order."""
    import torch
    from PIL import Image

    device = next(clip.model.parameters()).device
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(images), BATCH), desc="CLIP image embeddings", unit="batch", mininterval=5):
            batch = torch.stack([clip.preprocess(Image.fromarray(im)) for im in images[i:i + BATCH]]).to(device)
            out.append(torch.nn.functional.normalize(clip.model.encode_image(batch).float(), dim=-1).cpu())
    if not out:
        raise ValueError("no images to embed")
    return torch.cat(out).numpy()


def write_embeddings(path, embeddings: np.ndarray, files: list[str], clip: ClipModel) -> None:
    from safetensors.numpy import save_file

    meta = {"files": json.dumps(list(files)), "clip_model": clip.description,
            "logit_scale": repr(clip.logit_scale)}
    with atomic_path(path) as tmp:
        save_file({EMBEDDING_KEY: np.ascontiguousarray(embeddings, dtype=np.float32)}, str(tmp), metadata=meta)


def embed_image_set(index: pd.DataFrame, image_dir, spec: dict, out_path, device: str = "cpu") -> None:
    """The embeddings rule: embed every image of index.csv with the spec's model, write atomically."""
    clip = load_clip(spec, device)
    write_embeddings(out_path, compute_image_embeddings(clip, load_images(index, image_dir)),
                     index["file"].tolist(), clip)


def read_embeddings(path, index: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """Embeddings rows in index order, checked against the index's file list (naming the file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        emb = f.get_tensor(EMBEDDING_KEY)
    files = json.loads(meta.get("files", "[]"))
    by_file = {f: i for i, f in enumerate(files)}
    missing = [f for f in index["file"] if f not in by_file]
    if missing:
        raise ValueError(f"{path}: no embeddings for {len(missing)} image(s) of the index, e.g. {missing[0]!r}; "
                         "re-run the embeddings rule")
    return emb[[by_file[f] for f in index["file"]]], meta


def image_embeddings(index: pd.DataFrame, image_dir, clip: ClipModel, embeddings=None) -> np.ndarray:
    """The shared embeddings file when given (the workflow), else computed here (library use)."""
    if embeddings is not None:
        return read_embeddings(embeddings, index)[0]
    return compute_image_embeddings(clip, load_images(index, image_dir))


def clip_spec(params: dict) -> dict:
    """The CLIP model spec of a scorer entry: the workflow resolves `clip_model: <name>` into the
    `clip_models.<name>` entry (plus its name) before calling the scorer."""
    spec = params.get("clip_model")
    if not isinstance(spec, dict):
        raise ValueError(f"scorer {params.get('kind')!r}: clip_model must be a CLIP model spec "
                         f"(the workflow resolves the name {spec!r} from clip_models), got {spec!r}")
    return spec
