"""Parsers of the raw dataset formats: IDX (MNIST), AMAT (Larochelle's binarised MNIST),
MATLAB (the paper's Omniglot, Frey Face), and zipped PNGs (Lake et al.'s Omniglot images).

Each returns NumPy arrays and raises a one-line `UserError` naming the file when the file is
not what it should be. The catalogue (`iwae.data.catalogue`) composes them into datasets.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from iwae.errors import UserError


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


def read_frey(path: Path) -> np.ndarray:
    """Roweis's Frey Face file: 'ff', uint8 (560, 1965), each column one 28x20 image in C
    order; returned as (1965, 560) uint8 rows (row-major 28x20 images)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file
        raise UserError(f"{path}: not a readable MATLAB file ({e})") from None
    ff = mat.get("ff")
    if ff is None or ff.shape != (560, 1965) or ff.dtype != np.uint8:
        shape = None if ff is None else (ff.shape, str(ff.dtype))
        raise UserError(f"{path}: expected 'ff' of 560 x 1965 uint8 values, found {shape}")
    return np.ascontiguousarray(ff.T)


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
