import bz2
import gzip
import shutil

import numpy as np
import pytest

from jaxinterp import assets, data

pytestmark = pytest.mark.usefixtures("offline_cache")


def _check_images(images, labels, count, side):
    assert images.shape == (count, side, side) and images.dtype == np.float32
    assert labels.shape == (count,) and labels.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9
    assert set(np.unique(labels)) == set(range(10))


@pytest.mark.parametrize("split, count", [("train", 50_000), ("valid", 10_000), ("test", 10_000)])
def test_mnist_splits(split, count):
    images, labels = data.mnist(split)
    _check_images(images, labels, count, 28)


def test_mnist_truncated_copy_is_rejected_before_unpickling(tmp_path):
    truncated = tmp_path / "mnist.pkl.gz"
    truncated.write_bytes(assets.resolve("mnist").read_bytes()[:4096])
    with pytest.raises(assets.AssetIntegrityError) as error:
        data.mnist("test", root=tmp_path)
    message = str(error.value)
    assert str(truncated) in message
    assert assets.sha256_of(truncated) in message
    assert "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416" in message
    assert "jaxinterp assets install mnist" in message


def test_mnist_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(assets.AssetNotFoundError, match=r"lacks mnist.pkl.gz(.|\n)*jaxinterp assets install mnist"):
        data.mnist("train", root=tmp_path)


def test_unknown_split():
    with pytest.raises(ValueError, match="expected one of train, valid, test"):
        data.mnist("validation")


@pytest.mark.parametrize("split, count", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_splits(split, count):
    images, labels = data.fashion_mnist(split)
    _check_images(images, labels, count, 28)
    assert np.bincount(labels).tolist() == [count // 10] * 10


@pytest.fixture
def fashion_mnist_copy(tmp_path):
    """A folder with a copy of the Fashion-MNIST test files, for damaging."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    source = assets.resolve("fashion-mnist")
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        shutil.copyfile(source / name, folder / name)
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]:
        (folder / name).symlink_to(source / name)
    return folder


def test_fashion_mnist_truncated_gzip(fashion_mnist_copy):
    images = fashion_mnist_copy / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100_000])
    with pytest.raises(assets.AssetIntegrityError, match="not a readable gzip file") as error:
        data.fashion_mnist("test", root=fashion_mnist_copy)
    assert str(images) in str(error.value)
    assert "jaxinterp assets install fashion-mnist" in str(error.value)


def test_fashion_mnist_content_shorter_than_its_header(fashion_mnist_copy):
    labels = fashion_mnist_copy / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(content[:-10]))
    with pytest.raises(assets.AssetIntegrityError, match=r"9998 bytes after decompression, header \(10000,\)"):
        data.fashion_mnist("test", root=fashion_mnist_copy)


def test_fashion_mnist_bad_magic_number(fashion_mnist_copy):
    labels = fashion_mnist_copy / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + bytes(12)))
    with pytest.raises(assets.AssetIntegrityError, match="bad IDX magic number"):
        data.fashion_mnist("test", root=fashion_mnist_copy)


def test_fashion_mnist_files_swapped(fashion_mnist_copy):
    (fashion_mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    shutil.copyfile(fashion_mnist_copy / "t10k-images-idx3-ubyte.gz", fashion_mnist_copy / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(assets.AssetIntegrityError, match=r"labels have shape \(10000, 28, 28\)"):
        data.fashion_mnist("test", root=fashion_mnist_copy)


def test_digits():
    images, labels = data.digits()
    _check_images(images, labels, 1797, 8)
    assert images.max() == 1.0


@pytest.mark.parametrize("split, count", [("train", 67_349), ("dev", 872), ("test", 1_821)])
def test_sst2_splits(split, count):
    sentences, labels = data.sst2(split)
    assert len(sentences) == count and labels.shape == (count,) and labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1}
    assert all(isinstance(sentence, str) and sentence for sentence in sentences)


def test_sst2_known_rows():
    sentences, labels = data.sst2("train")
    assert (sentences[0], labels[0]) == ("hide new secretions from the parental units", 0)
    sentences, labels = data.sst2("dev")
    assert (sentences[0], labels[0]) == ("one long string of cliches .", 0)


def test_sst2_truncated_copy(tmp_path):
    source = assets.resolve("sst2") / "dev.tsv"
    (tmp_path / "dev.tsv").write_bytes(source.read_bytes()[:5_000])
    for name in ["train.tsv", "test.tsv"]:
        (tmp_path / name).symlink_to(source.parent / name)
    with pytest.raises(assets.AssetIntegrityError, match=r"rows, expected 872") as error:
        data.sst2("dev", root=tmp_path)
    assert str(tmp_path / "dev.tsv") in str(error.value)


def test_sst2_missing_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXINTERP_DATA", str(tmp_path))
    with pytest.raises(assets.AssetNotFoundError, match="jaxinterp assets install sst2"):
        data.sst2("dev")


def test_ag_news():
    texts, labels = data.ag_news()
    assert len(texts) == 7_600 and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [1_900] * 4
    assert texts[0].startswith("Fears for T N pension after talks Unions representing workers at Turner")
    assert labels[0] == data.AG_NEWS_CLASSES.index("Business")


def test_ag_news_split_is_stratified_and_seeded():
    texts, _labels = data.ag_news()
    (train_texts, train_labels), (heldout_texts, heldout_labels) = data.ag_news_split(seed=0)
    assert len(train_texts) == 6_000 and len(heldout_texts) == 1_600
    assert np.bincount(train_labels).tolist() == [1_500] * 4
    assert np.bincount(heldout_labels).tolist() == [400] * 4
    assert sorted(train_texts + heldout_texts) == sorted(texts)
    (same_train, _), _ = data.ag_news_split(seed=0)
    (other_train, _), _ = data.ag_news_split(seed=1)
    assert same_train == train_texts and other_train != train_texts
    with pytest.raises(ValueError, match="multiple of 4"):
        data.ag_news_split(1_601)


def test_ag_news_truncated_copy(tmp_path):
    source = assets.resolve("ag_news") / "test.csv"
    (tmp_path / "test.csv").write_bytes(source.read_bytes()[:20_000])
    with pytest.raises(assets.AssetIntegrityError, match=str(tmp_path / "test.csv")):
        data.ag_news(tmp_path)


def test_rotten_tomatoes():
    texts, labels = data.rotten_tomatoes()
    assert len(texts) == 12_808 and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [5_405, 7_403]
    assert (
        texts[-1] == "The character of ZigZag is not sufficiently developed to support a film constructed around him."
    )
    assert labels[-1] == 0


def test_rotten_tomatoes_truncated_copy(tmp_path):
    truncated = tmp_path / "rotten_tomatoes_corpus_full.csv.bz2"
    truncated.write_bytes(assets.resolve("rotten-tomatoes").read_bytes()[:50_000])
    with pytest.raises(assets.AssetIntegrityError, match="not a readable bz2 CSV") as error:
        data.rotten_tomatoes(truncated)
    assert str(truncated) in str(error.value)


def test_rotten_tomatoes_wrong_columns(tmp_path):
    wrong = tmp_path / "rotten_tomatoes_corpus_full.csv.bz2"
    wrong.write_bytes(bz2.compress(b"label,review\n1,great\n"))
    with pytest.raises(assets.AssetIntegrityError, match="columns category,text"):
        data.rotten_tomatoes(tmp_path)
