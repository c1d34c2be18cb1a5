"""An on-disk store of a model's activations over a text corpus: computed in jitted batches, written in shuffled
chunks (`.npy` files and a JSON manifest), resumable, and read back as shuffled `[batch, d]` batches for training a
dictionary (SNMF, SAEs). See `docs/snmf.md#the-activation-store`."""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import time
from collections.abc import Callable, Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from .. import sharding
from ..capture import capture

MANIFEST = "manifest.json"
VERSION = 1
_WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 2048)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class StoreError(RuntimeError):
    """A store that cannot be read or resumed: a missing or corrupt chunk file, a manifest of other settings."""


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """What a store is built from (a store is resumed only with the same settings).

    - `sites`: site names of the model (`docs/sites.md`) whose value has the token axis first; anything after it
      is flattened, so `blocks.L.attn.z` `[seq, heads, d_head]` is stored as `[heads * d_head]` per token (the
      heads concatenated).
    - `context`: texts are cut to this many tokens.
    - `chunk_tokens`: about this many tokens per chunk (whole texts; a chunk ends at the first text boundary past
      it).
    - `batch_tokens`: about this many tokens per forward (texts of similar length are padded together, to the
      next of a few widths).
    - `seed`: the shuffle of each chunk's rows.
    - `dtype`: `"float32"` or `"float16"` on disk (read back as float32).
    - `model_name`: a label for the manifest (which model the activations are of).
    """

    sites: tuple[str, ...]
    context: int = 128
    chunk_tokens: int = 32_768
    batch_tokens: int = 2_048
    seed: int = 0
    dtype: str = "float32"
    model_name: str = ""


def _fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _width(length: int, context: int) -> int:
    return next((w for w in _WIDTHS if w >= length), context) if length <= context else context


def _deepest_layer(sites: Sequence[str]) -> int | None:
    """The last block a site lives in, or `None` when some site is outside the blocks (the whole model runs)."""
    layers = []
    for site in sites:
        match = _BLOCK.match(site)
        if match is None:
            return None
        layers.append(int(match.group(1)))
    return max(layers)


def _forward(model, sites, blocks):
    """A jitted `[batch, width]` tokens + mask -> `{site: [batch, width, d]}` over the model's first `blocks` blocks
    (every block when `None`)."""

    def prefix(model, tokens, attention_mask):
        x = model.embed(tokens)
        mask = model.attention_mask(tokens.shape[0], attention_mask)
        for layer, block in enumerate(model.blocks[:blocks]):
            x = block(x, mask, model.cfg, layer)
        return x

    def one(model, tokens, attention_mask):
        if blocks is None:
            _, cache = capture(model, *sites)(tokens, attention_mask=attention_mask)
        else:
            _, cache = capture(lambda t, m: prefix(model, t, m), *sites)(tokens, attention_mask)
        return {site: cache[site].reshape(tokens.shape[0], -1) for site in sites}

    @eqx.filter_jit
    def run(model, tokens, attention_mask):
        return jax.vmap(lambda t, m: one(model, t, m))(tokens, attention_mask)

    return run


class ActivationStore:
    """A store on disk (`folder/manifest.json` and `folder/chunk_NNNNN.<site>.npy` plus `chunk_NNNNN.rows.npy`).

    Open one with `ActivationStore(folder)`; build one with `build_activation_store`. `manifest` holds the
    settings, the chunks and the last build's speed (`manifest["build"]["tokens_per_s"]`).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = pathlib.Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise StoreError(f"no activation store at {self.folder}: {path} is missing")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise StoreError(f"the manifest {path} is not valid JSON ({error})") from None
        if self.manifest.get("version") != VERSION:
            raise StoreError(f"{path}: store version {self.manifest.get('version')}, this code reads {VERSION}")

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(self.manifest["settings"]["sites"])

    def width(self, site: str) -> int:
        """The number of values per token at `site`."""
        self._check_site(site)
        return int(self.manifest["widths"][site])

    @property
    def rows(self) -> int:
        """Tokens in the store (rows of every site)."""
        return sum(chunk["rows"] for chunk in self.manifest["chunks"])

    @property
    def complete(self) -> bool:
        return all(chunk["complete"] for chunk in self.manifest["chunks"])

    def _check_site(self, site):
        if site not in self.sites:
            raise KeyError(f"the store has no site {site!r}; it has {list(self.sites)}")

    def _file(self, index: int, name: str) -> pathlib.Path:
        return self.folder / f"chunk_{index:05d}.{name}.npy"

    def _read(self, index: int, name: str, columns: int | None) -> np.ndarray:
        chunk = self.manifest["chunks"][index]
        path = self._file(index, name)
        if not chunk["complete"]:
            raise StoreError(f"chunk {index} ({path.name}) is not built yet; run build_activation_store to resume")
        if not path.is_file():
            raise StoreError(f"chunk file {path} is missing (the manifest lists it as complete)")
        try:
            values = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise StoreError(f"chunk file {path} is corrupt ({error}); delete it and rebuild") from None
        expected = (chunk["rows"],) if columns is None else (chunk["rows"], columns)
        if values.shape != expected:
            raise StoreError(f"chunk file {path} has shape {values.shape}, the manifest says {expected}; rebuild it")
        return values

    def chunk(self, index: int, site: str) -> np.ndarray:
        """Chunk `index`'s activations at `site`, float32 `[rows, d]` (rows in the chunk's shuffled order)."""
        self._check_site(site)
        return np.asarray(self._read(index, _file_name(site), self.width(site)), np.float32)

    def chunk_rows(self, index: int) -> np.ndarray:
        """Where chunk `index`'s rows come from: int32 `[rows, 3]`, (text index, position, token id)."""
        return np.asarray(self._read(index, "rows", 3)).reshape(-1, 3)

    def load(self, site: str, max_rows: int | None = None) -> np.ndarray:
        """The activations at `site` of every chunk in turn (each chunk shuffled), float32 `[n, d]`, at most
        `max_rows` of them."""
        out, total = [], 0
        for index in range(len(self.manifest["chunks"])):
            if max_rows is not None and total >= max_rows:
                break
            values = self.chunk(index, site)
            out.append(values if max_rows is None else values[: max_rows - total])
            total += len(out[-1])
        return np.concatenate(out) if out else np.zeros((0, self.width(site)), np.float32)

    def rows_info(self, max_rows: int | None = None) -> np.ndarray:
        """`chunk_rows` of every chunk in turn, in the order `load` returns activations."""
        out = [self.chunk_rows(i) for i in range(len(self.manifest["chunks"]))]
        joined = np.concatenate(out) if out else np.zeros((0, 3), np.int32)
        return joined if max_rows is None else joined[:max_rows]

    def batches(
        self, site: str, batch_size: int, *, seed: int = 0, epochs: int = 1, buffer_chunks: int = 4
    ) -> Iterator[np.ndarray]:
        """Shuffled training batches: float32 `[batch_size, d]` arrays, `epochs` passes over the store. Each pass
        visits the chunks in a random order, pools `buffer_chunks` of them at a time and yields their rows in a
        random order; rows that do not fill a last batch are carried into the next pool (and dropped at the end).
        The same `seed` gives the same batches."""
        self._check_site(site)
        if batch_size < 1 or epochs < 1 or buffer_chunks < 1:
            raise ValueError(f"batches: batch_size, epochs and buffer_chunks must be positive; got "
                             f"{batch_size}, {epochs}, {buffer_chunks}")  # fmt: skip
        rng = np.random.default_rng(seed)
        carry = np.zeros((0, self.width(site)), np.float32)
        for _ in range(epochs):
            order = rng.permutation(len(self.manifest["chunks"]))
            for start in range(0, len(order), buffer_chunks):
                pool = np.concatenate(
                    [carry] + [self.chunk(int(i), site) for i in order[start : start + buffer_chunks]]
                )
                pool = pool[rng.permutation(len(pool))]
                full = len(pool) // batch_size * batch_size
                for begin in range(0, full, batch_size):
                    yield pool[begin : begin + batch_size]
                carry = pool[full:]


def _file_name(site: str) -> str:
    return "site_" + re.sub(r"[^A-Za-z0-9_.-]", "_", site)


def _plan(lengths: np.ndarray, chunk_tokens: int) -> list[tuple[int, int]]:
    chunks, start, total = [], 0, 0
    for i, length in enumerate(lengths):
        total += int(length)
        if total >= chunk_tokens:
            chunks.append((start, i + 1))
            start, total = i + 1, 0
    if start < len(lengths):
        chunks.append((start, len(lengths)))
    return chunks


def _atomic_save(path: pathlib.Path, values: np.ndarray) -> None:
    temporary = path.with_suffix(".partial.npy")
    np.save(temporary, values)
    os.replace(temporary, path)


def _write_manifest(folder: pathlib.Path, manifest: dict) -> None:
    temporary = folder / (MANIFEST + ".partial")
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, folder / MANIFEST)


def build_activation_store(
    folder: str | os.PathLike,
    model,
    tokenize: Callable[[Sequence[str]], list[Sequence[int]]] | object,
    texts: Sequence[str],
    settings: StoreSettings,
    *,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> ActivationStore:
    """Compute `model`'s activations at `settings.sites` for every token of `texts` and write them to `folder` in
    chunks; a folder already holding a store of the same settings and texts is resumed (finished chunks are
    kept, the rest computed).

    **Arguments:**

    - `folder`: where the store lives (created if needed).
    - `model`: a `models.Transformer` (or any model with `embed`, `attention_mask`, `blocks` and `cfg` whose
      blocks tag the sites; when every site is in a block, only the blocks up to the deepest one run).
    - `tokenize`: a `tokenizers.Tokenizer` (its `encode_batch` is used) or a function from texts to token-id
      lists.
    - `texts`: the corpus (e.g. `jaxinterp.data.sst2()[0]`); texts with no token are skipped.
    - `settings`: a `StoreSettings`.
    - `progress`: a tqdm bar over the tokens.
    - `mesh`: a one-dimensional `jax.sharding.Mesh` to run the forward passes data-parallel: each batch of texts
      is split across its devices (padded to a multiple of the device count) and the model is replicated. The
      store's contents do not depend on it.

    **Returns:** the `ActivationStore`. Its `manifest["build"]` records this run's tokens, seconds and
    `tokens_per_s` (forward, transfer and writing included).

    **Raises:** `StoreError` when `folder` holds a store of other settings or texts, or a finished chunk file is
    missing or corrupt.
    """
    folder = pathlib.Path(folder)
    if not settings.sites:
        raise ValueError("build_activation_store: settings.sites names no site")
    if settings.dtype not in ("float32", "float16"):
        raise ValueError(f"build_activation_store: dtype must be 'float32' or 'float16'; got {settings.dtype!r}")
    if settings.context < 1 or settings.chunk_tokens < 1 or settings.batch_tokens < 1:
        raise ValueError(f"build_activation_store: context, chunk_tokens and batch_tokens must be positive: {settings}")
    encode = tokenize.encode_batch if hasattr(tokenize, "encode_batch") else tokenize
    encoded = encode(list(texts))
    ids = [np.asarray(getattr(e, "ids", e), np.int32)[: settings.context] for e in encoded]
    lengths = np.array([len(i) for i in ids])
    fingerprint = _fingerprint(texts)
    folder.mkdir(parents=True, exist_ok=True)
    settings_record = dataclasses.asdict(settings) | {"sites": list(settings.sites)}

    blocks = _deepest_layer(settings.sites)
    run = _forward(model, tuple(settings.sites), None if blocks is None else blocks + 1)
    n_devices = 1 if sharding.check_mesh(mesh) is None else mesh.devices.size
    if mesh is not None:
        model = sharding.replicate(model, mesh)

    if (folder / MANIFEST).is_file():
        store = ActivationStore(folder)
        manifest = store.manifest
        if manifest["settings"] != settings_record or manifest["texts_sha256"] != fingerprint:
            raise StoreError(
                f"{folder} holds a store of other settings or texts ({manifest['settings']}); use another folder "
                "or delete this one"
            )
        for index, chunk in enumerate(manifest["chunks"]):
            if chunk["complete"]:  # a missing or corrupt finished chunk is an error, not silently rebuilt
                store.chunk_rows(index)
                for site in settings.sites:
                    store._read(index, _file_name(site), manifest["widths"][site])
    else:
        probe = run(model, jnp.zeros((1, 16), jnp.int32), jnp.ones((1, 16), bool))
        widths = {site: int(value.shape[-1]) for site, value in probe.items()}
        manifest = {
            "version": VERSION,
            "settings": settings_record,
            "texts": len(texts),
            "texts_sha256": fingerprint,
            "widths": widths,
            "chunks": [
                {"index": i, "texts": [a, b], "rows": int(lengths[a:b].sum()), "complete": False}
                for i, (a, b) in enumerate(_plan(lengths, settings.chunk_tokens))
            ],
        }
        _write_manifest(folder, manifest)

    todo = [chunk for chunk in manifest["chunks"] if not chunk["complete"]]
    started, done = time.perf_counter(), 0
    dtype = np.dtype(settings.dtype)
    with tqdm(total=sum(c["rows"] for c in todo), unit="tok", desc="activations", disable=not progress) as bar:
        for chunk in todo:
            a, b = chunk["texts"]
            values = {site: [] for site in settings.sites}
            rows = []
            members = [i for i in range(a, b) if lengths[i] > 0]
            by_width: dict[int, list[int]] = {}
            for i in members:
                by_width.setdefault(_width(int(lengths[i]), settings.context), []).append(i)
            for width, group in sorted(by_width.items()):
                per_batch = -(-max(1, settings.batch_tokens // width) // n_devices) * n_devices
                for begin in range(0, len(group), per_batch):
                    batch = group[begin : begin + per_batch]
                    tokens = np.zeros((per_batch, width), np.int32)
                    mask = np.zeros((per_batch, width), bool)
                    for row, i in enumerate(batch):
                        tokens[row, : lengths[i]] = ids[i]
                        mask[row, : lengths[i]] = True
                    mask[len(batch) :, 0] = True  # padding rows, never kept
                    placed = (tokens, mask) if mesh is None else sharding.shard_batch((tokens, mask), mesh)
                    out = jax.device_get(run(model, *placed))
                    keep = mask[: len(batch)]
                    for site in settings.sites:
                        values[site].append(out[site][: len(batch)][keep].astype(dtype))
                    text_index, position = np.nonzero(keep)
                    rows.append(np.stack([np.asarray(batch)[text_index], position, tokens[text_index, position]], 1))
                    bar.update(int(keep.sum()))
            rows = np.concatenate(rows).astype(np.int32)
            order = np.random.default_rng([settings.seed, chunk["index"]]).permutation(len(rows))
            index = chunk["index"]
            for site in settings.sites:
                _atomic_save(folder / f"chunk_{index:05d}.{_file_name(site)}.npy", np.concatenate(values[site])[order])
            _atomic_save(folder / f"chunk_{index:05d}.rows.npy", rows[order])
            chunk["complete"] = True
            done += len(rows)
            _write_manifest(folder, manifest)
    seconds = time.perf_counter() - started
    if done or "build" not in manifest:  # a run with nothing left to do keeps the record of the one that built it
        manifest["build"] = {"tokens": done, "seconds": seconds, "tokens_per_s": done / seconds if done else None}
        _write_manifest(folder, manifest)
    return ActivationStore(folder)
