"""Datasets: sources and fingerprints, parsers on the real files, splits, binarisation."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from iwae.data import catalogue, datasets, parsers, sources
from iwae.data.datasets import subset
from iwae.errors import UserError


def test_fingerprints_of_mirror_files(raw_dir):
    for name in ("mnist", "mnist-fixed", "omniglot-resized", "freyface"):
        for raw in catalogue.get(name).raw_files:
            assert raw.verify(raw_dir / raw.name) is not None, raw.name


def test_git_blob_fingerprint(raw_dir):
    # the id `git hash-object` prints for the labels file (shared/data/SOURCES.md)
    path = raw_dir / "mnist/train-labels-idx1-ubyte.gz"
    assert sources.file_digest(path, "git-blob") == "707a576bb523304d5b674de436c0779d77b7d480"


def _one_file_mirror(tmp_path, raw_dir, name: str, corrupt: bool = False, plain: bool = False):
    mirror = tmp_path / "mirror"
    target = mirror / name
    target.parent.mkdir(parents=True)
    if plain:  # a mirror holding the uncompressed original instead of the .gz
        target = mirror / name.removesuffix(".gz")
        with gzip.open(raw_dir / name) as f, open(target, "wb") as g:
            shutil.copyfileobj(f, g)
    else:
        shutil.copyfile(raw_dir / name, target)
    if corrupt:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    return mirror


def test_corrupt_file_is_rejected_with_every_source_and_nothing_left(tmp_path, raw_dir):
    raw = catalogue.get("mnist").raw_files[3]  # the small test-labels file
    mirror = _one_file_mirror(tmp_path, raw_dir, raw.name, corrupt=True)
    offline = sources.RawFile(raw.name, raw.fingerprints, ("http://127.0.0.1:9/nowhere.gz",))
    dest = tmp_path / "dest"
    with pytest.raises(UserError) as err:
        sources.fetch_file(offline, dest, str(mirror), timeout=2, retries=1, quiet=True)
    message = str(err.value)
    assert "\n" not in message
    assert "fingerprint mismatch" in message and str(mirror) in message and "127.0.0.1" in message
    assert not any(p.is_file() for p in dest.rglob("*")), list(dest.rglob("*"))


def test_corrupt_existing_copy_is_replaced(tmp_path, raw_dir):
    raw = catalogue.get("mnist").raw_files[3]
    dest = tmp_path / "dest"
    (dest / "mnist").mkdir(parents=True)
    (dest / raw.name).write_bytes(b"not the file")
    mirror = _one_file_mirror(tmp_path, raw_dir, raw.name)
    path = sources.fetch_file(raw, dest, str(mirror), quiet=True)
    assert raw.verify(path)


def test_plain_amat_source_is_gzipped_and_verified(tmp_path, raw_dir):
    raw = catalogue.get("mnist-fixed").raw_files[1]  # valid split
    mirror = _one_file_mirror(tmp_path, raw_dir, raw.name, plain=True)
    path = sources.fetch_file(raw, tmp_path / "dest", str(mirror), quiet=True)
    assert path.name.endswith(".amat.gz") and raw.verify(path)


def test_mnist_official_split(prepared, raw_dir):
    data = datasets.load(prepared["mnist"])
    assert (data.train.shape, data.valid.shape, data.test.shape) == ((59600, 784), (400, 784), (10000, 784))
    images = parsers.read_idx(raw_dir / "mnist/train-images-idx3-ubyte.gz", 2051).reshape(-1, 784)
    # no shuffle: the validation set is the last 400 training images
    np.testing.assert_array_equal(data.train[0].numpy(), images[0] / np.float32(255))
    np.testing.assert_array_equal(data.valid[-1].numpy(), images[-1] / np.float32(255))
    assert data.dynamic and data.meta["splits"] == {"train": 59600, "valid": 400, "test": 10000}
    assert {s["file"] for s in data.meta["sources"]} >= {"mnist/train-images-idx3-ubyte.gz"}


def test_mnist_fixed_binarization(prepared):
    data = datasets.load(prepared["mnist-fixed"])
    assert (data.train.shape[0], data.valid.shape[0], data.test.shape[0]) == (50000, 10000, 10000)
    assert not data.dynamic
    assert set(torch.unique(data.train).tolist()) == {0.0, 1.0}
    assert abs(data.train.mean().item() - 0.1306) < 0.002  # MNIST ink density


def test_omniglot_resized_split_and_images(prepared, raw_dir):
    data = datasets.load(prepared["omniglot-resized"])
    assert (data.train.shape[0], data.valid.shape[0], data.test.shape[0]) == (23000, 1345, 8115)
    assert data.meta["label"] != "Omniglot"  # never presented as the paper's file
    assert 0.0 <= data.train.min() and data.train.max() <= 1.0
    assert 0.05 < data.train.mean() < 0.15  # ink is 1 on a 0 background


def test_area_resize_averages_exact_areas():
    """Each output pixel covers 3.75 x 3.75 source pixels, fractional edges weighted by area
    (unlike PIL's BOX filter, which rounds the footprint to whole pixels)."""
    r = parsers.area_resize_matrix()
    np.testing.assert_allclose(r.sum(1), 1.0)  # a constant image stays constant
    ramp = np.arange(105, dtype=np.float64)
    np.testing.assert_allclose((r @ ramp)[0], (0 + 1 + 2 + 0.75 * 3) / 3.75)
    img = (np.random.RandomState(0).rand(105, 105) < 0.3).astype(np.float64)
    np.testing.assert_allclose((r @ img @ r.T).sum() * 3.75**2, img.sum())  # ink is conserved


def test_chardata_fortran_order_and_shapes(tmp_path):
    import scipy.io

    rng = np.random.RandomState(0)
    train = (rng.rand(30, 28, 28) < 0.2).astype(np.float64)
    train[:, 0, :5] = 1.0  # an asymmetric mark: top-left horizontal bar
    test = (rng.rand(7, 28, 28) < 0.2).astype(np.float64)
    # MATLAB stores each image column-major in a column of the matrix
    scipy.io.savemat(
        tmp_path / "chardata.mat",
        {"data": train.reshape(30, -1, order="F").T, "testdata": test.reshape(7, -1, order="F").T},
    )
    got_train, got_test = parsers.read_chardata(tmp_path / "chardata.mat", n_train=30, n_test=7)
    np.testing.assert_array_equal(got_train.reshape(-1, 28, 28), train)
    np.testing.assert_array_equal(got_test.reshape(-1, 28, 28), test)
    with pytest.raises(UserError, match="'data' has shape"):
        parsers.read_chardata(tmp_path / "chardata.mat")  # the paper's sizes are asserted


def test_omniglot_shuffle_and_holdout_follow_official_seed():
    train = np.arange(24345, dtype=np.float32)[:, None].repeat(784, 1)
    kept, held = catalogue._holdout(train, 1345, shuffle=True)
    perm = np.random.RandomState(123).permutation(24345)
    assert kept.shape[0] == 23000 and held.shape[0] == 1345
    np.testing.assert_array_equal(held[:, 0], perm[-1345:])


def test_corrupt_raw_file_is_rejected_by_prepare(tmp_path, raw_dir):
    shutil.copytree(raw_dir / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist/t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    out = tmp_path / "mnist.npz"
    with pytest.raises(UserError, match="t10k-labels.*fingerprint mismatch"):
        datasets.prepare("mnist", tmp_path, out)
    assert not out.exists() and not list(tmp_path.glob(".mnist.npz*"))


def test_idx_and_amat_parsers_reject_damaged_files(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))
    with pytest.raises(UserError, match="bad.gz"):
        parsers.read_idx(bad, 2051)
    amat = tmp_path / "bad.amat"
    amat.write_text("0 1 2\n")
    with pytest.raises(UserError, match="bad.amat"):
        parsers.read_amat(amat)


def test_damaged_prepared_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UserError, match="x.npz"):
        datasets.load(bad)


def test_dynamic_binarization_is_unbiased_and_binary():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).repeat(20000, 1)
    b = datasets.binarize(x, g)
    assert set(torch.unique(b).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(b.mean(0), torch.tensor([0.0, 0.25, 0.5, 1.0]), atol=0.01, rtol=0)
    assert not torch.equal(datasets.binarize(x, g), b)  # fresh every call


def test_evaluation_subsets_are_random_not_the_first_points(prepared):
    """Larochelle's test file is sorted by digit: its first 500 points are all zeros, far more
    ink than average. A subset for a smaller evaluation must be spread over the file."""
    data = datasets.load(prepared["mnist-fixed"])
    whole = data.test.mean().item()
    first = data.test[:500].mean().item()
    assert first - whole > 0.02  # zeros carry more ink: the bias a first-N subset would bring
    index = subset(10000, 500)
    assert abs(data.test[index].mean().item() - whole) < 0.005
    assert index.unique().numel() == 500 and bool((index[1:] > index[:-1]).all())
    assert int(index.min()) < 100 and int(index.max()) > 9900
    torch.testing.assert_close(subset(10000, 500), index)  # the same points for every run
    torch.testing.assert_close(subset(10000, None), torch.arange(10000))
    torch.testing.assert_close(subset(30, 50), torch.arange(30))


def test_frey_face_loads_as_1965_faces_of_28_by_20(raw_dir, tmp_path):
    meta = datasets.prepare("freyface", raw_dir, tmp_path / "ff.npz")
    data = datasets.load(tmp_path / "ff.npz")
    assert meta["splits"] == {"train": 1600, "valid": 0, "test": 365} and data.image_shape == (28, 20)
    faces = torch.cat([data.train, data.test])
    assert faces.shape == (1965, 560) and data.likelihood == "gaussian-sigmoid" and not data.dynamic
    codes = faces * 256
    assert torch.equal(codes, codes.round()) and codes.min() == 8 and codes.max() == 238
    raw = torch.from_numpy(parsers.read_frey(raw_dir / "freyface/frey_rawface.mat"))
    order = np.random.RandomState(123).permutation(1965)
    assert torch.equal(codes[:1600].to(torch.uint8), raw[order[:1600]])  # the seeded split
    assert catalogue.get("freyface").image_shape == (28, 20)


def test_mnist_labels_in_the_prepared_splits(prepared):
    data = datasets.load(prepared["mnist"])
    assert data.labels_of("test")[:5].tolist() == [7, 2, 1, 0, 4]  # MNIST's first test digits
    assert data.labels_of("train").shape == (59600,) and data.labels_of("valid").shape == (400,)
    assert torch.bincount(data.labels_of("test")).tolist()[1] == 1135  # the test set's ones
