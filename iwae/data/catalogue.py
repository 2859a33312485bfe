"""The dataset catalogue: one entry per dataset, found by name.

An entry says everything the project needs to know of a dataset: how tables name it, its raw
files with their published fingerprints and sources, how its splits are built from them,
their sizes, the image shape, whether it is binarised (afresh at every use, or once by its
publisher), and which of the paper's datasets its published values belong to. The config
checks, the workflow, the command line and the report read it; nothing restates it.

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
    freyface          Frey's 1,965 face images of 28x20 from Roweis's frey_rawface.mat,
                      grey / 256, continuous (never binarised); shuffled with
                      RandomState(123) (Kingma's code): 1,600 train / 365 test, no
                      validation split.

MNIST's splits carry their digit labels (`Splits.labels`).

A new dataset is an entry here (with its builder) and, for a new file format, a parser in
`iwae.data.parsers`. Importing this module does not import PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iwae.data import parsers
from iwae.data.sources import Fingerprint, RawFile, fetch_file, mirror_from_env
from iwae.errors import UserError

SHUFFLE_SEED = 123  # the official code's RandomState for the Omniglot shuffle


@dataclass
class Splits:
    train: np.ndarray  # (n, pixels) float32
    valid: np.ndarray
    test: np.ndarray
    labels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # per split, where known


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str  # how tables and figures name it
    note: str  # one line: what it is
    raw_files: tuple[RawFile, ...]
    build: Callable[[dict[str, Path]], Splits]  # raw file name -> verified path, to splits
    splits: tuple[int, int, int]  # train, valid, test sizes
    # "dynamic" (re-sampled at every use), "fixed" (binarised once by its publisher) or
    # "none" (continuous grey levels, modelled by a Gaussian)
    binarization: str = "dynamic"
    image_shape: tuple[int, int] = (28, 28)
    labelled: bool = False  # its builder gives class labels (Splits.labels)
    reference: str | None = None  # the paper's dataset whose published values apply
    # why the published values of `reference` are for orientation only (None: same data)
    caveat: str | None = None

    @property
    def pixels(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    @property
    def likelihood(self) -> str:
        """The observation model its data call for (`iwae.models.likelihoods`): Bernoulli for binary
        images, Kingma & Welling's Gaussian with sigmoid means for continuous ones."""
        return "gaussian-sigmoid" if self.binarization == "none" else "bernoulli"


# --------------------------------------------------------------------------- builders


def _holdout(train: np.ndarray, n_valid: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    if shuffle:
        train = train[np.random.RandomState(SHUFFLE_SEED).permutation(train.shape[0])]
    return train[:-n_valid], train[-n_valid:]


def build_mnist(files: dict[str, Path]) -> Splits:
    train = parsers.read_idx(files["mnist/train-images-idx3-ubyte.gz"], 2051).reshape(-1, 784)
    test = parsers.read_idx(files["mnist/t10k-images-idx3-ubyte.gz"], 2051).reshape(-1, 784)
    train_labels = parsers.read_idx(files["mnist/train-labels-idx1-ubyte.gz"], 2049)
    test_labels = parsers.read_idx(files["mnist/t10k-labels-idx1-ubyte.gz"], 2049)
    if train_labels.shape[0] != train.shape[0] or test_labels.shape[0] != test.shape[0]:
        raise UserError("mnist: the label files do not match the image files in length")
    train, valid = _holdout(train.astype(np.float32) / 255.0, 400, shuffle=False)
    train_labels, valid_labels = _holdout(train_labels, 400, shuffle=False)
    return Splits(train, valid, test.astype(np.float32) / 255.0, (train_labels, valid_labels, test_labels))


def build_omniglot(files: dict[str, Path]) -> Splits:
    train, test = parsers.read_chardata(files["omniglot/chardata.mat"])
    train, valid = _holdout(train, 1345, shuffle=True)
    return Splits(train, valid, test)


def build_omniglot_resized(files: dict[str, Path]) -> Splits:
    chars = parsers.read_omniglot_images(
        [files["omniglot_raw/images_background.zip"], files["omniglot_raw/images_evaluation.zip"]]
    )
    train, test = [], []
    for key, drawings in chars.items():
        if len(drawings) != 20:
            raise UserError(f"omniglot_raw: character {key} has {len(drawings)} drawings, expected 20")
        train += drawings[:15]
        test += drawings[15:]
    train = np.stack(train).reshape(-1, 784).astype(np.float32)
    train, valid = _holdout(train, 1345, shuffle=True)
    return Splits(train, valid, np.stack(test).reshape(-1, 784).astype(np.float32))


def build_freyface(files: dict[str, Path]) -> Splits:
    faces = parsers.read_frey(files["freyface/frey_rawface.mat"]).astype(np.float32) / 256.0
    faces = faces[np.random.RandomState(SHUFFLE_SEED).permutation(faces.shape[0])]
    return Splits(faces[:1600], faces[:0], faces[1600:])


def build_mnist_fixed(files: dict[str, Path]) -> Splits:
    return Splits(
        *(parsers.read_amat(files[f"binarized_mnist/binarized_mnist_{s}.amat.gz"]) for s in ("train", "valid", "test"))
    )


# --------------------------------------------------------------------------- raw files

_MNIST_URLS = (
    "http://yann.lecun.com/exdb/mnist/",  # canonical
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
)


def _mnist(filename: str, sha256: str, md5: str) -> RawFile:
    return RawFile(
        f"mnist/{filename}",
        (Fingerprint("sha256", sha256), Fingerprint("md5", md5)),
        tuple(base + filename for base in _MNIST_URLS),
    )


def _binarized(split: str, sha256_plain: str) -> RawFile:
    filename = f"binarized_mnist_{split}.amat"
    return RawFile(
        f"binarized_mnist/{filename}.gz",
        (Fingerprint("sha256", sha256_plain, of_decompressed=True, note="Larochelle's original .amat"),),
        (f"http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/{filename}",),
        mirror_names=(f"binarized_mnist/{filename}",),
    )


def _omniglot_zip(filename: str, canonical_md5: str, repack_sha256: str) -> RawFile:
    return RawFile(
        f"omniglot_raw/{filename}",
        (
            Fingerprint("md5", canonical_md5, note="brendenlake/omniglot python/" + filename),
            Fingerprint("sha256", repack_sha256, note="lossless repack (no tIME chunks)"),
        ),
        tuple(
            base + filename
            for base in (
                "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/",
                "https://github.com/brendenlake/omniglot/raw/master/python/",
            )
        ),
    )


# --------------------------------------------------------------------------- the catalogue

CATALOGUE: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "mnist",
            "MNIST",
            "LeCun's IDX files; official split 59,600 / 400 / 10,000",
            (
                _mnist(
                    "train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                _mnist(
                    "train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
                _mnist(
                    "t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                _mnist(
                    "t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ),
            build_mnist,
            (59600, 400, 10000),
            labelled=True,
            reference="mnist",
        ),
        Dataset(
            "omniglot",
            "Omniglot",
            "the paper's 28x28 chardata.mat; 23,000 / 1,345 / 8,070",
            (
                RawFile(
                    "omniglot/chardata.mat",
                    # the only published fingerprint: the git blob id in yburda/iwae
                    (Fingerprint("git-blob", "016a3536ffe5e1d38e42563a18d7a78bfaf643ec", note="yburda/iwae"),),
                    (
                        "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat",
                        "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat",
                    ),
                ),
            ),
            build_omniglot,
            (23000, 1345, 8070),
            reference="omniglot",
        ),
        Dataset(
            "omniglot-resized",
            "Omniglot (resized)",
            "not the paper's file: Lake et al.'s 105x105 images area-averaged to 28x28; 23,000 / 1,345 / 8,115",
            (
                _omniglot_zip(
                    "images_background.zip",
                    "68d2efa1b9178cc56df9314c21c6e718",
                    "a7906ec85338c6d6b43f29fdedbb1bfb3a2af576a41cb665a4d036de01b85d4b",
                ),
                _omniglot_zip(
                    "images_evaluation.zip",
                    "6b91aef0f799c5bb55b94e3f2daec811",
                    "5d11ef164151762b04eb00aed98b24cee2716f8d098a3d5e801384ae0b9d7c03",
                ),
            ),
            build_omniglot_resized,
            (23000, 1345, 8115),
            reference="omniglot",
            caveat="built by this pipeline from Lake et al.'s 105x105 images; not the paper's Omniglot file, "
            "so its reference values (†) are for orientation only",
        ),
        Dataset(
            "mnist-fixed",
            "MNIST (fixed binarization)",
            "Larochelle & Murray's fixed binarization; 50,000 / 10,000 / 10,000",
            (
                _binarized("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
                _binarized("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
                _binarized("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
            ),
            build_mnist_fixed,
            (50000, 10000, 10000),
            binarization="fixed",
            reference="mnist-fixed",
        ),
        Dataset(
            "freyface",
            "Frey Face",
            "Frey's 1,965 faces of 28x20 (Roweis's frey_rawface.mat), grey / 256; 1,600 / 0 / 365",
            (
                RawFile(
                    "freyface/frey_rawface.mat",
                    (
                        Fingerprint("sha256", "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"),
                        Fingerprint("md5", "5aeb024d42b8a6091f30e5eb18c8a48d"),
                    ),
                    ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",),
                ),
            ),
            build_freyface,
            (1600, 0, 365),
            binarization="none",
            image_shape=(28, 20),
        ),
    )
}


def get(name: str) -> Dataset:
    if name not in CATALOGUE:
        raise UserError(f"dataset {name!r}: unknown; expected one of {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def raw_file_owners() -> dict[str, str]:
    """Raw file name (as stored under the raw directory) -> the dataset it belongs to."""
    return {raw.name: d.name for d in CATALOGUE.values() for raw in d.raw_files}


def fetch(dataset: str, dest_dir: Path, mirror: str | None = None, only: str | None = None, **kwargs) -> list[Path]:
    """Fetch and verify every raw file of `dataset` (or just the one named `only`)."""
    files = get(dataset).raw_files
    chosen = [raw for raw in files if only is None or raw.name == only]
    if not chosen:
        raise UserError(f"{only}: not a raw file of {dataset} ({', '.join(r.name for r in files)})")
    mirror = mirror_from_env(mirror)
    return [fetch_file(raw, Path(dest_dir), mirror, **kwargs) for raw in chosen]
