"""The IDX reader, IDX data sets, image folders and the normalization statistics, on files written in tmp_path."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cnnserve.card import InputSpec
from cnnserve.errors import DataError
from cnnserve.training.data import (
    FASHION_MNIST_LABELS,
    channel_stats,
    load_idx,
    load_image_folder,
    load_image_folders,
    read_idx,
)

IdxBytes = Callable[[np.ndarray], bytes]
WriteIdx = Callable[[Path, np.ndarray], Path]
ImageFolderFactory = Callable[..., Path]


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5),
        np.array([-7, 0, 300_000], dtype=">i4"),
        np.linspace(-1, 1, 12, dtype=">f4").reshape(3, 4),
    ],
    ids=["uint8-3d", "int32-1d", "float32-2d"],
)
def test_read_idx_round_trips_raw_and_gzip(tmp_path: Path, name: str, array: np.ndarray, write_idx: WriteIdx) -> None:
    result = read_idx(write_idx(tmp_path / name, array))
    assert result.shape == array.shape
    assert result.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(result, array)


def test_truncated_payload_names_the_file_and_the_expected_size(tmp_path: Path, idx_bytes: IdxBytes) -> None:
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))[:-10])
    with pytest.raises(DataError, match=r"short-idx3-ubyte: payload is 3126 bytes; expected 3136 .*truncated"):
        read_idx(path)


def test_truncated_gzip_stream_is_a_data_error(tmp_path: Path, idx_bytes: IdxBytes) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((50, 28, 28), dtype=np.uint8)))[:-40])
    with pytest.raises(DataError, match=r"cut.gz: corrupt or truncated gzip data"):
        read_idx(path)


def test_corrupt_gzip_body_is_a_data_error(tmp_path: Path, idx_bytes: IdxBytes) -> None:
    data = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8))))
    data[20:30] = b"\xff" * 10
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad.gz: corrupt or truncated gzip data"):
        read_idx(path)


@pytest.mark.parametrize("header", [b"\x00\x00\x01\x03", b"\x12\x34\x08\x03", b"", b"\x00\x00"])
def test_bad_magic_is_a_data_error(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "magic"
    path.write_bytes(header + b"\x00" * 12)
    with pytest.raises(DataError, match=r"magic: bad IDX magic .*expected 00 00 <type> <ndim>"):
        read_idx(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope: file not found"):
        read_idx(tmp_path / "nope")


def test_load_idx_reads_a_split_as_nchw(tiny_idx_dir: Path) -> None:
    data = load_idx(tiny_idx_dir, "test")
    assert data.images.shape == (64, 1, 28, 28)
    assert data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert data.label_names == tuple(str(i) for i in range(10))  # no labels.txt, not called *fashion*
    assert "t10k-images-idx3-ubyte.gz" in data.source


def test_load_idx_reads_uncompressed_files_in_mnist_dot_naming(tmp_path: Path, write_idx: WriteIdx) -> None:
    labels = np.array([0, 1, 2, 1], dtype=np.uint8)
    write_idx(tmp_path / "train-images.idx3-ubyte", np.zeros((4, 6, 5), dtype=np.uint8))
    write_idx(tmp_path / "train-labels.idx1-ubyte", labels)
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\n")
    data = load_idx(tmp_path, "train")
    assert data.images.shape == (4, 1, 6, 5)
    assert data.label_names == ("zero", "one", "two")
    np.testing.assert_array_equal(data.labels, labels)


def test_image_and_label_counts_must_agree(tmp_path: Path, write_idx: WriteIdx) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match=r"has 5 images but .*t10k-labels-idx1-ubyte.gz has 4 labels"):
        load_idx(tmp_path, "test")


def test_missing_split_names_the_expected_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte\[.gz\] file"):
        load_idx(tmp_path, "train")
    with pytest.raises(DataError, match=r"data folder not found"):
        load_idx(tmp_path / "absent", "train")


def test_real_fashion_mnist_loads_with_its_counts_shapes_and_names(fashion_mnist_dir: Path) -> None:
    train, test = load_idx(fashion_mnist_dir, "train"), load_idx(fashion_mnist_dir, "test")
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.label_names == FASHION_MNIST_LABELS
    # Balanced classes: 6000 per class in train, 1000 in test.
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    mean, std = channel_stats(train.images)
    assert mean[0] == pytest.approx(0.286041, abs=1e-6)
    assert std[0] == pytest.approx(0.353024, abs=1e-6)


def test_channel_stats_match_numpy_per_channel() -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(7, 3, 5, 9), dtype=np.uint8)
    mean, std = channel_stats(images)
    scaled = images / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize(
    "spec", [InputSpec(channels=1, height=28, width=28), InputSpec(channels=3, height=20, width=30)]
)
def test_image_folder_resizes_gray_and_rgb_of_any_size(make_image_folder: ImageFolderFactory, spec: InputSpec) -> None:
    data = load_image_folder(make_image_folder("pets"), spec)
    assert data.images.shape == (12, *spec.shape)
    assert data.label_names == ("ant", "bee", "cat")  # sorted folder names
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folders_with_train_and_test_use_them(make_image_folder: ImageFolderFactory) -> None:
    root = make_image_folder("split/train")
    make_image_folder("split/test", per_class=2)
    train, test = load_image_folders(root.parent, InputSpec(), test_fraction=0.5, seed=0)
    assert (len(train), len(test)) == (12, 6)
    assert test.label_names == train.label_names


def test_image_folder_without_split_is_split_per_class_by_seed(make_image_folder: ImageFolderFactory) -> None:
    root = make_image_folder("flat", per_class=5)
    train, test = load_image_folders(root, InputSpec(), test_fraction=0.2, seed=3)
    assert (len(train), len(test)) == (12, 3)
    assert np.bincount(test.labels).tolist() == [1, 1, 1]
    again = load_image_folders(root, InputSpec(), test_fraction=0.2, seed=3)[1]
    np.testing.assert_array_equal(again.images, test.images)


def test_test_folder_with_other_classes_is_refused(make_image_folder: ImageFolderFactory) -> None:
    root = make_image_folder("odd/train")
    make_image_folder("odd/test", classes=("ant", "bee", "dog"))
    with pytest.raises(DataError, match=r"expected the training classes \['ant', 'bee', 'cat'\]"):
        load_image_folders(root.parent, InputSpec(), test_fraction=0.2, seed=0)


def test_corrupt_image_names_the_file(make_image_folder: ImageFolderFactory) -> None:
    root = make_image_folder("broken")
    (root / "bee" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"9.png: cannot decode image"):
        load_image_folder(root, InputSpec())


def test_image_folder_needs_two_classes(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match=r"1 class sub-folder\(s\); expected at least 2"):
        load_image_folder(tmp_path, InputSpec())
