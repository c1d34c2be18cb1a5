import gzip
import pathlib
import pickle
import zlib

import numpy as np

from .. import assets

_MNIST_SPLITS = {"train": 0, "valid": 1, "test": 2}
_MNIST_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
_FASHION_MNIST_PREFIXES = {"train": "train", "test": "t10k"}
_FASHION_MNIST_SIZES = {"train": 60_000, "test": 10_000}
_IDX_UNSIGNED_BYTE = 0x08


def _check_split(split: str, known: dict) -> None:
    if split not in known:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(known)}")


def mnist(split: str = "train", root: pathlib.Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST handwritten digits, in the 50,000 / 10,000 / 10,000 train / valid / test split of `mnist.pkl.gz`.

    The file is a pickle, so it is read only after its SHA-256 matches the pinned digest.

    **Arguments:**

    - `split`: `"train"` (50,000 images), `"valid"` (10,000) or `"test"` (10,000).
    - `root`: the `mnist.pkl.gz` file or its folder; by default `jaxinterp.assets.resolve("mnist")`.

    **Returns:**

    `(images, labels)`: float32 images of shape `[n, 28, 28]` with values in `[0, 1]`, and int32 labels `0..9`.
    A file whose digest differs raises `jaxinterp.assets.AssetIntegrityError` naming the file and both digests.
    """
    _check_split(split, _MNIST_SPLITS)
    path = assets.verify_sha256("mnist", assets.resolve("mnist", root))
    with gzip.open(path, "rb") as stream:
        splits = pickle.load(stream, encoding="latin1")
    images, labels = splits[_MNIST_SPLITS[split]]
    images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
    labels = np.asarray(labels, dtype=np.int32)
    if images.shape[0] != _MNIST_SIZES[split] or labels.shape != (_MNIST_SIZES[split],):
        raise assets.AssetIntegrityError.for_file(
            "mnist", path, f"split {split!r} has {images.shape[0]} images, expected {_MNIST_SIZES[split]}"
        )
    return images, labels


def _read_idx(path: pathlib.Path | str, asset_name: str) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST file format).

    **Arguments:**

    - `path`: the `.gz` file.
    - `asset_name`: the asset the file belongs to, named in errors.

    **Returns:**

    A uint8 array whose shape is the one in the file's header. A file that is truncated, not gzip, has a bad magic
    number or a size that disagrees with its header raises `jaxinterp.assets.AssetIntegrityError`.
    """
    try:
        with gzip.open(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise assets.AssetIntegrityError.for_file(asset_name, path, f"not a readable gzip file ({error})") from None
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] != _IDX_UNSIGNED_BYTE:
        raise assets.AssetIntegrityError.for_file(asset_name, path, "bad IDX magic number (expected 0x0000 0x08 ndim)")
    ndim = content[3]
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise assets.AssetIntegrityError.for_file(asset_name, path, "IDX header is truncated")
    shape = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    expected_bytes = header_size + int(np.prod(shape))
    if len(content) != expected_bytes:
        raise assets.AssetIntegrityError.for_file(
            asset_name, path, f"{len(content)} bytes after decompression, header {shape} needs {expected_bytes}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def fashion_mnist(split: str = "train", root: pathlib.Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST clothing images (Xiao et al. 2017), 60,000 train / 10,000 test, ten classes.

    **Arguments:**

    - `split`: `"train"` (60,000 images) or `"test"` (10,000).
    - `root`: the folder holding the four IDX `.gz` files; by default `jaxinterp.assets.resolve("fashion-mnist")`.

    **Returns:**

    `(images, labels)`: float32 images of shape `[n, 28, 28]` with values in `[0, 1]`, and int32 labels `0..9`
    (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).
    """
    _check_split(split, _FASHION_MNIST_PREFIXES)
    folder = assets.resolve("fashion-mnist", root)
    prefix = _FASHION_MNIST_PREFIXES[split]
    size = _FASHION_MNIST_SIZES[split]
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
    images = _read_idx(images_path, "fashion-mnist")
    labels = _read_idx(labels_path, "fashion-mnist")
    if images.shape != (size, 28, 28):
        raise assets.AssetIntegrityError.for_file(
            "fashion-mnist", images_path, f"images have shape {images.shape}, expected {(size, 28, 28)}"
        )
    if labels.shape != (size,):
        raise assets.AssetIntegrityError.for_file(
            "fashion-mnist", labels_path, f"labels have shape {labels.shape}, expected {(size,)}"
        )
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 handwritten digits that ship with scikit-learn (UCI optical recognition of digits).

    **Returns:**

    `(images, labels)`: float32 images of shape `[1797, 8, 8]` with values in `[0, 1]` (the raw 0..16 counts
    divided by 16), and int32 labels `0..9`.
    """
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int32)
