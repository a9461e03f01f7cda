"""Fine-tuning datasets: (image, caption) rows for the fine-tuners, from four sources.

A `datasets.<name>` config entry picks a `source` (a key of `SOURCES`):

- `toy`: the toy world's stand-ins, `set: style` (the anime set, for Naruto) or `set: subject`
  (one two-tone toy photographed a few times, for DreamBooth); `size` rows, `seed`.
- `naruto_blip`: the Naruto BLIP-captions parquet files (`lambdalabs/naruto-blip-captions`):
  columns `image` (a struct `{bytes, path}` holding an encoded image) and `text` (the caption).
  `path` is one parquet file or a directory whose `*.parquet` files are read in name order.
- `dreambooth`: the `google/dreambooth` layout, `dataset/<subject>/*.jpg` plus
  `dataset/prompts_and_classes.txt` (its `subject_name,class` section gives the class noun).
  `path` is the repository root (holding `dataset/`) or the `dataset/` folder itself.

Every row knows where it came from (`origins`), so a corrupt image or a missing caption is one
error that names the file and the row. Images keep their own sizes; `prepare_images` centre-crops
and resizes them to a model's resolution (the reference scripts' transforms, minus the flip,
which the latent cache handles).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class FinetuneDataset:
    """Rows of a fine-tuning set. `class_name` is the subject's class noun (DreamBooth sets only)."""

    name: str
    images: list[np.ndarray]  # uint8 (H, W, 3), sizes may differ
    captions: list[str]
    origins: list[str]  # "file" or "file row N", for error messages
    class_name: str | None = None
    info: dict = field(default_factory=dict)  # what the source was (recorded in the cache file)

    def __post_init__(self):
        if not (len(self.images) == len(self.captions) == len(self.origins)):
            raise ValueError(f"dataset {self.name}: {len(self.images)} images, {len(self.captions)} captions, "
                             f"{len(self.origins)} origins")
        if not self.images:
            raise ValueError(f"dataset {self.name}: no rows")

    def __len__(self) -> int:
        return len(self.images)


def decode_image(data: bytes, origin: str) -> np.ndarray:
    """RGB uint8 from encoded bytes (EXIF orientation applied, as the DreamBooth script does)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{origin}: corrupt or unreadable image: {e}") from None


def _caption(value, origin: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{origin}: missing or empty caption (text={value!r})")
    return value.strip()


# ------------------------------------------------------------------------------------------- toy
def load_toy(name: str, entry: dict) -> FinetuneDataset:
    from editrobust.toyworld.captions import sample_style_set, sample_subject_set

    which, seed = entry["set"], int(entry.get("seed", 0))
    if which == "style":
        size = int(entry.get("size", 256))
        images, captions = sample_style_set(size, seed=seed, style_word=bool(entry.get("style_word", True)))
        class_name = None
    elif which == "subject":
        size = int(entry.get("size", 5))
        images, captions = sample_subject_set(size, seed=seed)
        class_name = "toy"
    else:
        raise ValueError(f"datasets.{name}.set: unknown toy set {which!r} (known: style, subject)")
    origins = [f"toy {which} set row {i}" for i in range(len(captions))]
    return FinetuneDataset(name, list(images), list(captions), origins, class_name,
                           info=dict(source="toy", set=which, size=size, seed=seed))


# --------------------------------------------------------------------------------- Naruto BLIP
def parquet_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.parquet files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    return [path]


def load_naruto_blip(name: str, entry: dict) -> FinetuneDataset:
    """Rows of the Naruto BLIP parquet shard(s): `image.bytes` decoded, `text` as the caption."""
    import pyarrow.parquet as pq

    images, captions, origins = [], [], []
    for file in parquet_files(entry["path"]):
        try:
            table = pq.read_table(file)
        except Exception as e:  # pyarrow raises several types for a broken file
            raise ValueError(f"{file}: not a readable parquet file: {e}") from None
        missing = [c for c in ("image", "text") if c not in table.column_names]
        if missing:
            raise ValueError(f"{file}: missing column(s) {', '.join(missing)} (has {', '.join(table.column_names)})")
        for row, (img, text) in enumerate(zip(table.column("image").to_pylist(), table.column("text").to_pylist())):
            origin = f"{file} row {row}"
            captions.append(_caption(text, origin))
            data = img.get("bytes") if isinstance(img, dict) else img
            if not data:
                raise ValueError(f"{origin}: the image has no bytes")
            images.append(decode_image(data, origin))
            origins.append(origin)
    limit = entry.get("size")
    if limit is not None:
        images, captions, origins = images[:limit], captions[:limit], origins[:limit]
    return FinetuneDataset(name, images, captions, origins,
                           info=dict(source="naruto_blip", path=str(entry["path"]), rows=len(images)))


# ---------------------------------------------------------------------------------- DreamBooth
def read_dreambooth_classes(path: str | Path) -> dict[str, str]:
    """The `subject_name,class` section of `prompts_and_classes.txt` as {subject: class}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DreamBooth class list not found: {path}")
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().replace(" ", "") == "subject_name,class")
    except StopIteration:
        raise ValueError(f"{path}: no 'subject_name,class' header") from None
    classes = {}
    for n, line in enumerate(lines[start + 1:], start=start + 2):
        if not line.strip():
            break
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path} line {n}: expected 'subject_name,class', got {line!r}")
        classes[parts[0]] = parts[1]
    return classes


def dreambooth_root(path: str | Path) -> Path:
    path = Path(path)
    return path / "dataset" if (path / "dataset").is_dir() else path


def load_dreambooth(name: str, entry: dict) -> FinetuneDataset:
    """One subject's photos. The caption of every row is the class noun; the DreamBooth method
    builds its instance prompt ("a photo of sks dog") from the identifier and this class."""
    root = dreambooth_root(entry["path"])
    subject = entry["subject"]
    classes = read_dreambooth_classes(root / "prompts_and_classes.txt")
    if subject not in classes:
        raise ValueError(f"datasets.{name}.subject: {subject!r} is not listed in {root / 'prompts_and_classes.txt'} "
                         f"(known: {', '.join(sorted(classes))})")
    folder = root / subject
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no images of subject {subject!r}")
    images = [decode_image(f.read_bytes(), str(f)) for f in files]
    class_name = entry.get("class_name") or classes[subject]
    return FinetuneDataset(name, images, [class_name] * len(files), [str(f) for f in files], class_name,
                           info=dict(source="dreambooth", path=str(entry["path"]), subject=subject,
                                     files=[f.name for f in files]))


SOURCES: dict[str, Callable[[str, dict], FinetuneDataset]] = {
    "toy": load_toy,
    "naruto_blip": load_naruto_blip,
    "dreambooth": load_dreambooth,
}


def load_finetune_dataset(name: str, entry: dict) -> FinetuneDataset:
    """The dataset of config entry `datasets.<name>`."""
    source = entry.get("source")
    if source not in SOURCES:
        raise ValueError(f"datasets.{name}.source: unknown source {source!r} (known: {', '.join(SOURCES)})")
    return SOURCES[source](name, entry)


def dataset_inputs(entry: dict) -> list[str]:
    """Files a dataset is read from (Snakemake inputs: editing them re-encodes the cache)."""
    if entry["source"] == "naruto_blip":
        return [str(f) for f in parquet_files(entry["path"])] if Path(entry["path"]).exists() else [entry["path"]]
    if entry["source"] == "dreambooth":
        root = dreambooth_root(entry["path"])
        return [str(root / "prompts_and_classes.txt"), str(root / entry["subject"])]
    return []


def prepare_images(images: list[np.ndarray], resolution: int) -> np.ndarray:
    """Centre-crop each image to a square and resize it (Lanczos) to `resolution`: uint8 (N, R, R, 3)."""
    out = np.empty((len(images), resolution, resolution, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = img[top:top + s, left:left + s]
        if s != resolution:
            crop = np.asarray(Image.fromarray(crop).resize((resolution, resolution), Image.Resampling.LANCZOS))
        out[i] = crop
    return out

