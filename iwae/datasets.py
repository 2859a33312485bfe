"""The datasets: parsing the raw files, the official splits, and dynamic binarisation.

`prepare` turns verified raw files (see `iwae.sources`) into one compressed .npz per dataset
holding train / valid / test arrays of grey values in [0, 1] (or fixed binary values) and a
small metadata record (source fingerprints, split sizes). `load` reads it back as tensors on
the training device, where every minibatch is binarised afresh (`binarize`).

    mnist             LeCun's IDX files, grey / 255. Official split: the last 400 training
                      images held out: 59,600 / 400 / 10,000. Dynamic binarisation.
    omniglot          the paper's 28x28 chardata.mat; images stored column-major (Fortran
                      order); training set shuffled with RandomState(123), last 1,345 held
                      out: 23,000 / 1,345 / 8,070. Dynamic binarisation.
    omniglot-resized  NOT the paper's file: built from Lake et al.'s 105x105 images, ink = 1,
                      area-averaged to 28x28; per character drawings 1-15 train, 16-20 test;
                      then the same shuffle and hold-out: 23,000 / 1,345 / 8,115.
    mnist-fixed       Larochelle & Murray's fixed binarisation: 50,000 / 10,000 / 10,000,
                      never re-binarised.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from iwae import __version__
from iwae.errors import UserError
from iwae.files import atomic_path
from iwae.sources import RawFile, raw_files

SHUFFLE_SEED = 123  # the official code's RandomState for the Omniglot shuffle
OMNIGLOT_VALID = 1345
MNIST_VALID = 400


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    label: str  # how tables and figures name it
    binarization: str  # "dynamic" (re-sampled at every use) or "fixed"
    note: str


DATASETS = {
    "mnist": DatasetInfo("mnist", "MNIST", "dynamic", "LeCun's IDX files; official split 59,600 / 400 / 10,000"),
    "omniglot": DatasetInfo(
        "omniglot", "Omniglot", "dynamic", "the paper's 28x28 chardata.mat; 23,000 / 1,345 / 8,070"
    ),
    "omniglot-resized": DatasetInfo(
        "omniglot-resized",
        "Omniglot (resized)",
        "dynamic",
        "not the paper's file: Lake et al.'s 105x105 images area-averaged to 28x28; 23,000 / 1,345 / 8,115",
    ),
    "mnist-fixed": DatasetInfo(
        "mnist-fixed",
        "MNIST (fixed binarization)",
        "fixed",
        "Larochelle & Murray's fixed binarization; 50,000 / 10,000 / 10,000",
    ),
}


def info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"dataset {name!r}: unknown; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass
class Splits:
    train: np.ndarray  # (n, 784) float32
    valid: np.ndarray
    test: np.ndarray


# --------------------------------------------------------------------------- parsers


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzipped) as a uint8 array; `magic` 2051 for images, 2049 for labels."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable gzip file ({e})") from None
    if len(data) < 8 or struct.unpack(">i", data[:4])[0] != magic:
        raise UserError(f"{path}: not an IDX file with magic number {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path}: {body.size} values, header says {dims}")
    return body.reshape(dims)


def read_amat(path: Path) -> np.ndarray:
    """Larochelle's .amat (plain or gzipped): one image per line, 784 values 0/1 separated
    by single spaces. Parsed from the bytes directly (np.loadtxt takes ~30 s per file)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: not readable ({e})") from None
    line = 784 * 2  # 784 digits, 783 spaces, a newline
    if data.size % line:
        raise UserError(f"{path}: not an .amat file of 784 binary values per line")
    rows = data.reshape(-1, line)
    digits = rows[:, 0::2]
    if not (np.all(rows[:, 1:-1:2] == ord(" ")) and np.all(rows[:, -1] == ord("\n"))) or not np.all(
        (digits == ord("0")) | (digits == ord("1"))
    ):
        raise UserError(f"{path}: not an .amat file of 784 binary values per line")
    return (digits - ord("0")).astype(np.float32)


def read_chardata(path: Path, n_train: int = 24345, n_test: int = 8070) -> tuple[np.ndarray, np.ndarray]:
    """The paper's Omniglot file: 'data' (784, 24345) and 'testdata' (784, 8070), each
    column one image stored column-major (MATLAB), returned as row-major (n, 784)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file
        raise UserError(f"{path}: not a readable MATLAB file ({e})") from None

    def images(key, n):
        if key not in mat:
            raise UserError(f"{path}: no variable {key!r}")
        a = np.asarray(mat[key], dtype=np.float32)
        if a.shape != (784, n):
            raise UserError(f"{path}: {key!r} has shape {a.shape}, expected (784, {n})")
        return a.T.reshape(-1, 28, 28).reshape(-1, 784, order="F")

    return images("data", n_train), images("testdata", n_test)


_OMNIGLOT_PNG = re.compile(r"images_(background|evaluation)/([^/]+)/character(\d+)/(\d{4})_(\d{2})\.png")


def area_resize_matrix(n_in: int = 105, n_out: int = 28) -> np.ndarray:
    """R (n_out, n_in) such that R @ img @ R.T averages img over each output pixel's area."""
    scale = n_in / n_out
    r = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            r[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return r


def read_omniglot_images(paths: list[Path]) -> dict[tuple[str, str, int], list[np.ndarray]]:
    """All drawings per (set, alphabet, character), in drawing order, as 28x28 ink maps."""
    from PIL import Image

    resize = area_resize_matrix()
    chars: dict[tuple[str, str, int], list[tuple[int, np.ndarray]]] = {}
    for path in paths:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(f"{path}: not a readable zip file ({e})") from None
        with archive:
            for name in sorted(archive.namelist()):
                match = _OMNIGLOT_PNG.fullmatch(name)
                if not match:
                    continue
                which, alphabet, char, _, drawing = match.groups()
                try:
                    img = Image.open(io.BytesIO(archive.read(name)))
                    ink = 1.0 - np.asarray(img.convert("L"), dtype=np.float64) / 255.0
                except Exception as e:
                    raise UserError(f"{path}: {name} is not a readable PNG ({e})") from None
                if ink.shape != (105, 105):
                    raise UserError(f"{path}: {name} is {ink.shape}, expected 105x105")
                key = (which, alphabet, int(char))
                chars.setdefault(key, []).append((int(drawing), resize @ ink @ resize.T))
    return {key: [img for _, img in sorted(v, key=lambda t: t[0])] for key, v in sorted(chars.items())}


# --------------------------------------------------------------------------- builders


def _holdout(train: np.ndarray, n_valid: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    if shuffle:
        train = train[np.random.RandomState(SHUFFLE_SEED).permutation(train.shape[0])]
    return train[:-n_valid], train[-n_valid:]


def build_mnist(files: dict[str, Path]) -> Splits:
    train = read_idx(files["mnist/train-images-idx3-ubyte.gz"], 2051).reshape(-1, 784)
    test = read_idx(files["mnist/t10k-images-idx3-ubyte.gz"], 2051).reshape(-1, 784)
    train, valid = _holdout(train.astype(np.float32) / 255.0, MNIST_VALID, shuffle=False)
    return Splits(train, valid, test.astype(np.float32) / 255.0)


def build_omniglot(files: dict[str, Path]) -> Splits:
    train, test = read_chardata(files["omniglot/chardata.mat"])
    train, valid = _holdout(train, OMNIGLOT_VALID, shuffle=True)
    return Splits(train, valid, test)


def build_omniglot_resized(files: dict[str, Path]) -> Splits:
    chars = read_omniglot_images(
        [files["omniglot_raw/images_background.zip"], files["omniglot_raw/images_evaluation.zip"]]
    )
    train, test = [], []
    for key, drawings in chars.items():
        if len(drawings) != 20:
            raise UserError(f"omniglot_raw: character {key} has {len(drawings)} drawings, expected 20")
        train += drawings[:15]
        test += drawings[15:]
    train = np.stack(train).reshape(-1, 784).astype(np.float32)
    train, valid = _holdout(train, OMNIGLOT_VALID, shuffle=True)
    return Splits(train, valid, np.stack(test).reshape(-1, 784).astype(np.float32))


def build_mnist_fixed(files: dict[str, Path]) -> Splits:
    return Splits(
        *(read_amat(files[f"binarized_mnist/binarized_mnist_{s}.amat.gz"]) for s in ("train", "valid", "test"))
    )


BUILDERS = {
    "mnist": (build_mnist, (59600, 400, 10000)),
    "omniglot": (build_omniglot, (23000, 1345, 8070)),
    "omniglot-resized": (build_omniglot_resized, (23000, 1345, 8115)),
    "mnist-fixed": (build_mnist_fixed, (50000, 10000, 10000)),
}


# --------------------------------------------------------------------------- prepare / load


def prepare(dataset: str, raw_dir: Path, out: Path) -> dict:
    """Verify the raw files of `dataset` under `raw_dir`, build the splits, write `out`."""
    meta_info = info(dataset)
    build, sizes = BUILDERS[dataset]
    files, sources = {}, []
    for raw in raw_files(dataset):
        path = Path(raw_dir) / raw.name
        if not path.is_file():
            raise UserError(f"{path}: missing; run `python -m iwae fetch {dataset}` first")
        fingerprint = raw.verify(path)
        if fingerprint is None:
            raise UserError(f"{path}: fingerprint mismatch; delete it and fetch again")
        files[raw.name] = path
        sources.append({"file": raw.name, "algorithm": fingerprint.algorithm, "digest": fingerprint.digest})
    splits = build(files)
    got = tuple(a.shape[0] for a in (splits.train, splits.valid, splits.test))
    if got != sizes or any(a.shape[1] != 784 for a in (splits.train, splits.valid, splits.test)):
        raise UserError(f"{dataset}: split sizes {got}, expected {sizes}")
    meta = {
        "dataset": dataset,
        "label": meta_info.label,
        "binarization": meta_info.binarization,
        "note": meta_info.note,
        "splits": dict(zip(("train", "valid", "test"), got)),
        "image_shape": [28, 28],
        "sources": sources,
        "iwae_version": __version__,
    }
    arrays, meta["scale"] = _encode(splits)
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays, meta=np.array(json.dumps(meta)))
    return meta


def _encode(splits: Splits) -> tuple[dict[str, np.ndarray], int | None]:
    """uint8 codes and their denominator when every value is exactly code / scale (MNIST's
    grey levels n/255, binary images, and 3.75x3.75 area averages of binary images, n/225);
    float32 otherwise. Four times smaller on disk and several times faster to load."""
    parts = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    for scale in (1, 255, 225):
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

    @property
    def dynamic(self) -> bool:
        return self.meta["binarization"] == "dynamic"


def load(path: Path, device="cpu", dtype=torch.float32) -> Data:
    path = Path(path)
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {s: _decode(z[s], meta.get("scale"), device, dtype) for s in ("train", "valid", "test")}
    except FileNotFoundError:
        raise UserError(f"{path}: no such prepared dataset; run `python -m iwae prepare` first") from None
    except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a prepared dataset ({e})") from None
    return Data(meta=meta, **arrays)


def _decode(array: np.ndarray, scale: int | None, device, dtype) -> Tensor:
    x = torch.from_numpy(array).to(device=device)
    return x.to(dtype) / scale if scale else x.to(dtype)


def binarize(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Bernoulli(x) samples, in x's dtype: 1 where u < x for u ~ U[0, 1)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return u.sub_(x).lt_(0)  # u - x < 0 exactly when u < x, written in place as 0.0 / 1.0


def files_of(dataset: str) -> list[RawFile]:
    return list(raw_files(dataset))
