"""Prepared datasets: the splits as one file, loaded as tensors, binarised on the device.

`prepare` turns verified raw files (see `iwae.data.sources`) into one compressed .npz per dataset
holding train / valid / test arrays of grey values in [0, 1] (or fixed binary values) and a
small metadata record (source fingerprints, split sizes), built as the dataset's catalogue
entry says (`iwae.data.catalogue`). `load` reads it back as tensors on the training device, where
every minibatch is binarised afresh (`binarize`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from iwae.data import catalogue
from iwae.data.catalogue import Splits
from iwae.errors import UserError
from iwae.system.files import atomic_path
from iwae.system.provenance import VERSION

# --------------------------------------------------------------------------- prepare / load


def prepare(dataset: str, raw_dir: Path, out: Path) -> dict:
    """Verify the raw files of `dataset` under `raw_dir`, build the splits, write `out`."""
    entry = catalogue.get(dataset)
    files, sources = {}, []
    for raw in entry.raw_files:
        path = Path(raw_dir) / raw.name
        if not path.is_file():
            raise UserError(f"{path}: missing; run `python -m iwae fetch {dataset}` first")
        fingerprint = raw.verify(path)
        if fingerprint is None:
            raise UserError(f"{path}: fingerprint mismatch; delete it and fetch again")
        files[raw.name] = path
        sources.append({"file": raw.name, "algorithm": fingerprint.algorithm, "digest": fingerprint.digest})
    splits = entry.build(files)
    got = tuple(a.shape[0] for a in (splits.train, splits.valid, splits.test))
    if got != entry.splits or any(a.shape[1] != entry.pixels for a in (splits.train, splits.valid, splits.test)):
        raise UserError(f"{dataset}: split sizes {got}, expected {entry.splits} of {entry.pixels} pixels")
    meta = {
        "dataset": dataset,
        "label": entry.label,
        "binarization": entry.binarization,
        "note": entry.note,
        "splits": dict(zip(("train", "valid", "test"), got)),
        "image_shape": list(entry.image_shape),
        "sources": sources,
        "iwae_version": VERSION,
    }
    arrays, meta["scale"] = _encode(splits)
    if splits.labels is not None:
        for split, labels in zip(("train", "valid", "test"), splits.labels):
            arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.uint8)
    meta["labels"] = splits.labels is not None
    meta["likelihood"] = entry.likelihood
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays, meta=np.array(json.dumps(meta)))
    return meta


def _encode(splits: Splits) -> tuple[dict[str, np.ndarray], int | None]:
    """uint8 codes and their denominator when every value is exactly code / scale (MNIST's
    grey levels n/255, binary images, 3.75x3.75 area averages of binary images, n/225, and
    Frey Face's n/256); float32 otherwise. Four times smaller on disk and several times
    faster to load."""
    parts = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    for scale in (1, 255, 225, 256):
        codes = {k: np.rint(v.astype(np.float64) * scale) for k, v in parts.items()}
        if all(np.allclose(codes[k] / scale, v, rtol=0, atol=1e-6) for k, v in parts.items()):
            return {k: c.astype(np.uint8) for k, c in codes.items()}, scale
    return {k: v.astype(np.float32) for k, v in parts.items()}, None


@dataclass
class Data:
    train: Tensor
    valid: Tensor
    test: Tensor
    meta: dict
    labels: dict[str, Tensor] | None = None  # per split (int64), where the dataset has them

    @property
    def dynamic(self) -> bool:
        return self.meta["binarization"] == "dynamic"

    @property
    def likelihood(self) -> str:
        """The observation model its data call for (files prepared before this was recorded
        hold binary images)."""
        return self.meta.get("likelihood", "bernoulli")

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.meta.get("image_shape", (28, 28)))

    def labels_of(self, split: str) -> Tensor:
        """The labels of a split (also "train+valid"), or a one-line error saying why there are none."""
        if self.labels is None:
            why = (
                "was prepared before labels were kept; delete it and prepare it again"
                if self.meta["dataset"] == "mnist"
                else "has no labels"
            )
            raise UserError(f"dataset {self.meta['dataset']}: {why}")
        if split == "train+valid":
            return torch.cat([self.labels["train"], self.labels["valid"]])
        return self.labels[split]

    def points(self, split: str) -> Tensor:
        """A split's points; "train+valid" is the training split with the validation split
        after it (what seed 000 and nbip/IWAE trained on)."""
        return torch.cat([self.train, self.valid]) if split == "train+valid" else getattr(self, split)

    def binarized(self, split: str, seed: int, grey_levels: bool = False, rows: int | None = None) -> Tensor:
        """A split as every estimate sees it (evaluation, validation, learning curves, figures):
        binarised once from a CPU stream of its own seeded `seed` (evaluation's), so that a
        point's bits depend on the seed, its split and its row alone, on no device and on no
        other estimate drawn before; the first n rows get the bits that binarising only them
        would give, so `rows` (the first rows only) binarises no more than it returns. Unchanged
        where the data are continuous or a run models grey levels."""
        x = self.points(split)[:rows]
        if self.dynamic and not grey_levels:
            return binarize(x.cpu(), torch.Generator().manual_seed(seed)).to(x.device)
        return x

    @property
    def classes(self) -> int:
        return int(self.labels_of("train").max()) + 1

    def one_hot_labels(self, split: str) -> Tensor:
        """The labels of a split as one-hot rows in the data's dtype (a conditional model's input)."""
        return torch.nn.functional.one_hot(self.labels_of(split), self.classes).to(self.train.dtype)


def load(path: Path, device="cpu", dtype=torch.float32) -> Data:
    path = Path(path)
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {s: _decode(z[s], meta.get("scale"), device, dtype) for s in ("train", "valid", "test")}
            labels = None
            if "train_labels" in z:
                labels = {s: torch.from_numpy(z[f"{s}_labels"]).long().to(device) for s in ("train", "valid", "test")}
    except FileNotFoundError:
        raise UserError(f"{path}: no such prepared dataset; run `python -m iwae prepare` first") from None
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        json.JSONDecodeError,
        zipfile.BadZipFile,
    ) as e:
        raise UserError(f"{path}: not a prepared dataset ({type(e).__name__}: {e})") from None
    _check_shapes(path, meta, arrays, labels)
    return Data(meta=meta, labels=labels, **arrays)


def _check_shapes(path: Path, meta: dict, arrays: dict[str, Tensor], labels: dict[str, Tensor] | None) -> None:
    """The splits as the dataset's catalogue entry has them (or, for data made elsewhere,
    as its record says): images of one size, one label per image. A damaged or foreign file
    fails here, not later inside a matrix product."""
    name = meta.get("dataset")
    if name in catalogue.CATALOGUE:
        pixels = catalogue.get(name).pixels
    elif "image_shape" in meta:
        pixels = int(np.prod(meta["image_shape"]))
    else:
        pixels = arrays["train"].shape[-1]
    for split, x in arrays.items():
        if x.dim() != 2 or x.shape[1] != pixels:
            raise UserError(f"{path}: the {split} split has shape {tuple(x.shape)}; {name} images have {pixels} pixels")
        if labels is not None and labels[split].shape != (x.shape[0],):
            raise UserError(f"{path}: the {split} split has {x.shape[0]} images but {labels[split].numel()} labels")


def _decode(array: np.ndarray, scale: int | None, device, dtype) -> Tensor:
    x = torch.from_numpy(array).to(device=device)
    return x.to(dtype) / scale if scale else x.to(dtype)


def binarize(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Bernoulli(x) samples, in x's dtype: 1 where u < x for u ~ U[0, 1)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return u.sub_(x).lt_(0)  # u - x < 0 exactly when u < x, written in place as 0.0 / 1.0


SUBSET_SEED = 2016  # draws the evaluation subsets; fixed so that every run sees the same points


def subset(total: int, n: int | None) -> Tensor:
    """Indices of n of `total` points drawn at random without replacement, in increasing
    order (the same for every run); all of them when n is None or at least `total`."""
    if n is None or n >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return order[:n].sort().values
