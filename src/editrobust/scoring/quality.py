"""Image quality of a variant's samples: FID against a reference image set, and CLIP score.

FID uses torch-fidelity (0.4): its feature extractors and its Fréchet distance
(`metric_fid.fid_features_to_statistics` / `fid_statistics_to_metric`), with features computed
here in plain batches on the CPU or GPU. Two extractors:

- `inception`: torch-fidelity's `inception-v3-compat` (the TF FID Inception, pool3 2048-d), the
  standard for real models. Its weights file `weights-inception-2015-12-05-6726825d.pth` is read
  from `fid.weights` or from where torch-fidelity itself caches it
  (`$TORCH_HOME/hub/checkpoints/`), with torch.load(weights_only=True); when absent the job fails
  naming the URL and the path. Nothing is downloaded.
- `toy_random_conv`: for the toy world (32x32 images, no download). A fixed three-layer ReLU
  convnet whose weights are drawn from a seeded NumPy generator (He init), pooled to 2x2 x 32
  channels = 128 features. Random conv features keep colour, layout and texture statistics
  (blur, speckle, a style's background), which is what a toy model's quality loss looks like;
  the toy oracle's probe colours were rejected because they are medians built to ignore exactly
  those artefacts. The numbers are not comparable with Inception FIDs of real models.

CLIP score (torchmetrics' definition): mean over images of 100 * max(cos(E_image, E_prompt), 0),
with the image embeddings shared by the CLIP scorers and the image's own prompt.

Output (`results/quality/<model>/<variant>/<quality_set>.csv`): one row per metric with
`metric, value, n_images, n_reference, reference, extractor` (CLIP score: `extractor` is the CLIP
model).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from editrobust.io import atomic_dir, load_image, save_png, write_csv
from editrobust.scoring.common import WeightsUnavailable, load_images

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
TOY_EXTRACTOR = "editrobust-toy-random-conv"
TOY_FEATURES = "128"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Toy references are fresh draws of the base world: a seed other than the toy models' training
# seed (0 by default), so the reference images are not the training images.
BATCH = 64


# --- feature extractors -------------------------------------------------------------------

@functools.cache
def _feature_extractor_classes():
    """Defined lazily so importing editrobust.scoring does not import torch-fidelity."""
    import torch
    import torch.nn.functional as F
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class ToyRandomConv(FeatureExtractorBase):
        """Seeded random ReLU convnet for 32x32 toy images (see the module docstring)."""

        LAYERS = ((3, 32, 1), (32, 64, 2), (64, 32, 2))  # (in, out, stride), 3x3 kernels

        def __init__(self, name, features_list, seed: int = 0, **kwargs):
            super().__init__(name, features_list)
            rng = np.random.default_rng(seed)
            self.weights = torch.nn.ParameterList()
            for c_in, c_out, _ in self.LAYERS:
                w = rng.normal(0.0, np.sqrt(2.0 / (c_in * 9)), size=(c_out, c_in, 3, 3)).astype(np.float32)
                self.weights.append(torch.nn.Parameter(torch.from_numpy(w), requires_grad=False))

        @staticmethod
        def get_provided_features_list():
            return (TOY_FEATURES,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return TOY_FEATURES

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected uint8 Bx3xHxW images, got {x.dtype} {tuple(x.shape)}")
            x = x.float() / 127.5 - 1.0
            if x.shape[-2:] != (32, 32):
                x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
            for w, (_, _, stride) in zip(self.weights, self.LAYERS):
                x = F.relu(F.conv2d(x, w, stride=stride, padding=1))
            return (F.adaptive_avg_pool2d(x, 2).flatten(1),)

    class SafeInceptionV3(FeatureExtractorInceptionV3):
        """torch-fidelity's FID Inception, but its weights come only from a local file read with
        torch.load(weights_only=True) (torch-fidelity would download or unpickle them)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

            path = inception_weights_path(feature_extractor_weights_path)
            state = torch.load(path, map_location="cpu", weights_only=True)
            original = tf_inception.load_state_dict_from_url
            tf_inception.load_state_dict_from_url = lambda *a, **k: state  # hand over the checked weights
            try:
                super().__init__(name, features_list, feature_extractor_weights_path=None, **kwargs)
            finally:
                tf_inception.load_state_dict_from_url = original

    return {"toy_random_conv": (ToyRandomConv, TOY_EXTRACTOR, TOY_FEATURES),
            "inception": (SafeInceptionV3, "editrobust-inception-v3-compat", "2048")}


_REGISTERED = False


def register_with_torch_fidelity() -> None:
    """Make the extractors usable by name in torch_fidelity.calculate_metrics too."""
    global _REGISTERED
    if _REGISTERED:
        return
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    for cls, name, _ in _feature_extractor_classes().values():
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, cls)
    _REGISTERED = True


def inception_weights_path(given=None) -> Path:
    """The FID Inception weights: `given`, else torch-fidelity's cache location."""
    import torch

    path = Path(os.path.expanduser(given)) if given else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not path.is_file():
        raise WeightsUnavailable(f"FID Inception weights not found at {path}. Download {INCEPTION_URL} "
                                 f"to that path (or set the quality set's fid.weights to where it is)")
    return path


def make_extractor(fid_spec: dict):
    """(extractor module, feature name, description) for a quality set's `fid` entry."""
    kind = fid_spec.get("extractor", "inception")
    register_with_torch_fidelity()
    classes = _feature_extractor_classes()
    if kind not in classes:
        raise ValueError(f"unknown FID extractor {kind!r}; known: {', '.join(classes)}")
    cls, name, feature = classes[kind]
    if kind == "toy_random_conv":
        seed = int(fid_spec.get("seed", 0))
        module, desc = cls(name, [feature], seed=seed), f"toy_random_conv(seed={seed})"
    else:
        module = cls(name, [feature], feature_extractor_weights_path=fid_spec.get("weights"))
        desc = f"inception-v3-compat/{INCEPTION_FILE}"
    return module.eval(), feature, desc


# --- FID ----------------------------------------------------------------------------------

def features(extractor, images, device: str = "cpu"):
    """Features (N, D) float64 tensor of uint8 HxWx3 arrays, in order; consecutive images of one
    size are batched (up to BATCH)."""
    import torch

    extractor = extractor.to(device)
    out = []
    progress = tqdm(total=len(images), desc="FID features", unit="image", mininterval=5)
    with torch.no_grad(), progress:
        i = 0
        while i < len(images):
            batch = [images[i]]
            while i + len(batch) < len(images) and len(batch) < BATCH and images[i + len(batch)].shape == images[i].shape:
                batch.append(images[i + len(batch)])
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous().to(device)
            out.append(extractor(x)[0].double().cpu())
            i += len(batch)
            progress.update(len(batch))
    return torch.cat(out)


def fid_from_features(a, b) -> float:
    """torch-fidelity's Fréchet distance between two feature sets (N, D) tensors."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(a)} and {len(b)}")
    stats = fid_features_to_statistics(a.cpu()), fid_features_to_statistics(b.cpu())
    return float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])


def fid(images_a, images_b, fid_spec: dict, device: str = "cpu") -> tuple[float, str]:
    extractor, _, desc = make_extractor(fid_spec)
    return fid_from_features(features(extractor, images_a, device), features(extractor, images_b, device)), desc


# --- CLIP score ---------------------------------------------------------------------------

def clip_score_from_embeddings(image_embeds, text_embeds) -> float:
    """mean_i 100 * max(cos(image_i, text_i), 0) (torchmetrics CLIPScore)."""
    a, b = np.asarray(image_embeds, dtype=np.float64), np.asarray(text_embeds, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.mean(100.0 * np.maximum(cos, 0.0)))


def clip_score(index: pd.DataFrame, image_dir, clip_spec: dict, embeddings=None, device: str = "cpu") -> tuple[float, str]:
    from editrobust.scoring.embeddings import image_embeddings, load_clip

    clip = load_clip(clip_spec, device)
    img = image_embeddings(index, image_dir, clip, embeddings)
    prompts = index["prompt"].astype(str).tolist()
    unique = sorted(set(prompts))
    text = dict(zip(unique, clip.encode_texts(unique).numpy()))
    return clip_score_from_embeddings(img, np.stack([text[p] for p in prompts])), clip.description


# --- reference sets -----------------------------------------------------------------------

def render_toy_reference(out_dir, n: int, seed: int) -> None:
    """The toy reference set: `n` renders of the base world (the distribution the toy model was
    trained on; the stand-in for COCO photos), as PNGs + index.csv, written atomically."""
    from editrobust.toyworld.captions import sample_base_world

    images, captions, _ = sample_base_world(n, seed)
    with atomic_dir(out_dir) as tmp:
        files = [f"ref_{i:05d}.png" for i in range(n)]
        for f, im in zip(files, images):
            save_png(tmp / f, im)
        write_csv(tmp / "index.csv", pd.DataFrame({"file": files, "prompt": captions}))


def reference_images(ref_dir) -> list[np.ndarray]:
    """Images of a reference directory: those of its index.csv, else every PNG/JPEG in it (sorted)."""
    ref_dir = Path(ref_dir)
    if not ref_dir.is_dir():
        raise FileNotFoundError(f"reference image directory not found: {ref_dir}")
    if (ref_dir / "index.csv").is_file():
        files = pd.read_csv(ref_dir / "index.csv")["file"].tolist()
    else:
        files = sorted(p.name for p in ref_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images in reference directory {ref_dir}")
    return [load_image(ref_dir / f) for f in files]


# --- the quality table --------------------------------------------------------------------

def quality_table(index: pd.DataFrame, image_dir, entry: dict, reference_dir=None, embeddings=None,
                  device: str = "cpu") -> pd.DataFrame:
    """The rows of one quality CSV for one image set and one `quality_sets` entry (whose
    `clip_score.clip_model` the workflow has resolved into a spec)."""
    rows = []
    if entry.get("fid") is not None:
        samples = load_images(index, image_dir)
        ref = reference_images(reference_dir)
        value, desc = fid(samples, ref, entry["fid"], device)
        rows.append(dict(metric="fid", value=value, n_images=len(samples), n_reference=len(ref),
                         reference=str(reference_dir), extractor=desc))
    if entry.get("clip_score") is not None:
        value, desc = clip_score(index, image_dir, entry["clip_score"]["clip_model"], embeddings, device)
        rows.append(dict(metric="clip_score", value=value, n_images=len(index), n_reference=0,
                         reference="prompts", extractor=desc))
    if not rows:
        raise ValueError("a quality set needs `fid`, `clip_score` or both")
    return pd.DataFrame(rows)
