"""SAELens's on-disk format for sparse autoencoders: a folder with `cfg.json`, `sae_weights.safetensors` and, from
training, `sparsity.safetensors`, as SAELens 6 writes them (`SAE.save_model`, `TrainingSAE.save_inference_model`
and the trainer's checkpoints) and reads them (`SAE.load_from_disk`)."""

import json
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from .sae import SparseAutoencoder

SAELENS_FORMAT_VERSION = "6.54.12"
"""The SAELens version whose files `save_saelens` writes (and whose `load_from_disk` reads them back)."""

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"

# SAELens's inference architectures; a BatchTopK SAE is saved as a JumpReLU one with its threshold
_SAVED_AS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_LOADED_AS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_SPARSITY_EPS = 1e-10


def save_saelens(
    sae: SparseAutoencoder,
    path: str | pathlib.Path,
    *,
    feature_sparsity: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Write an SAE in SAELens's format, so that `sae_lens.SAE.load_from_disk(path)` loads it.

    The folder gets `cfg.json` (SAELens's inference config: `d_in`, `d_sae`, `dtype` "float32", `device` "cpu",
    `apply_b_dec_to_input`, `normalize_activations` "none", `reshape_activations` "none", `metadata`, for TopK `k`
    and `rescale_acts_by_decoder_norm` false, and `architecture`: "standard" for ReLU, "topk", or "jumprelu" for
    JumpReLU and BatchTopK) and `sae_weights.safetensors` (float32 `W_enc`, `b_enc`, `W_dec`, `b_dec` and, for
    JumpReLU and BatchTopK, `threshold`). With `feature_sparsity`, also `sparsity.safetensors`: the tensor
    `sparsity`, `log10(frequency + 1e-10)` of each latent's firing frequency, as SAELens's trainer writes it.

    **Arguments:**

    - `sae`: the `SparseAutoencoder`.
    - `path`: the folder (created if need be; files in it are replaced).
    - `feature_sparsity`: each latent's firing frequency `[d_sae]` (e.g. `train_sae`'s `history["feature_sparsity"]`).
    - `metadata`: entries for the config's `metadata` (SAELens reads e.g. `model_name`, `hook_name`,
      `hook_head_index`, `context_size`, `prepend_bos`); `sae_lens_version` is set to `SAELENS_FORMAT_VERSION`.

    **Returns:** the folder, as a `pathlib.Path`.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"save_saelens: sae must be a SparseAutoencoder, got {type(sae).__name__}")
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.asarray(getattr(sae, name), np.float32) for name in ("W_dec", "W_enc", "b_dec", "b_enc")}
    if sae.threshold is not None and sae.architecture in ("jumprelu", "batchtopk"):
        tensors["threshold"] = np.asarray(sae.threshold, np.float32)
    for name, value in tensors.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"save_saelens: the SAE's {name} has NaN or infinite values")
    entries = dict(metadata or {})
    entries["sae_lens_version"] = SAELENS_FORMAT_VERSION
    if sae.architecture == "batchtopk":
        entries.setdefault("training_architecture", "batchtopk")
    config: dict[str, Any] = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": entries,
    }
    if sae.architecture == "topk":
        config |= {"k": int(sae.k), "rescale_acts_by_decoder_norm": False}
    config["architecture"] = _SAVED_AS[sae.architecture]
    safetensors.numpy.save_file(tensors, str(path / WEIGHTS_FILENAME))
    (path / CFG_FILENAME).write_text(json.dumps(config), encoding="utf-8")
    if feature_sparsity is not None:
        frequency = np.asarray(feature_sparsity, np.float32)
        if frequency.shape != (sae.d_sae,) or not np.all((frequency >= 0) & (frequency <= 1)):
            raise ValueError(
                f"save_saelens: feature_sparsity must be firing frequencies in [0, 1], shape ({sae.d_sae},); got "
                f"shape {frequency.shape}"
            )
        log = np.log10(frequency + np.float32(_SPARSITY_EPS)).astype(np.float32)
        safetensors.numpy.save_file({"sparsity": log}, str(path / SPARSITY_FILENAME))
    return path


def load_saelens(path: str | pathlib.Path) -> tuple[SparseAutoencoder, dict[str, Any], np.ndarray | None]:
    """Read an SAE in SAELens's format (as SAELens 6 saves it, or as `save_saelens` writes it).

    Standard (ReLU), TopK and JumpReLU SAEs are read; a TopK SAE saved with `rescale_acts_by_decoder_norm` has its
    decoder norms folded into the encoder, which encodes and decodes the same. Weights of any float dtype are read
    as float32. Activation normalisation other than "none" is refused (its scale is not in these files), as are
    other architectures; `reshape_activations` "hook_z" is accepted (the SAE reads `z` flattened over heads).

    **Arguments:** `path`: the folder.

    **Returns:** `(sae, config, log_sparsity)`: the `SparseAutoencoder`, the parsed `cfg.json`, and the `sparsity`
    tensor of `sparsity.safetensors` (log10 firing frequencies, float32 `[d_sae]`), or None without that file.
    """
    path = pathlib.Path(path)
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"load_saelens: no {name} in {path}")
    try:
        config = json.loads((path / CFG_FILENAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"load_saelens: {path / CFG_FILENAME} is not valid JSON: {error}") from None
    saved = config.get("architecture", "standard")
    if saved not in _LOADED_AS:
        raise ValueError(
            f"load_saelens: {path} holds a {saved!r} SAE; only {', '.join(map(repr, _LOADED_AS))} are supported"
        )
    normalise = config.get("normalize_activations", "none")
    if normalise != "none":
        raise ValueError(
            f"load_saelens: {path} normalises its inputs ({normalise!r}), whose scale is not stored in these files; "
            "fold it into the weights in SAELens first"
        )
    tensors = safetensors.numpy.load_file(str(path / WEIGHTS_FILENAME))
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = np.exp(tensors.pop("log_threshold"))
    needed = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if saved == "jumprelu" else [])
    missing = [name for name in needed if name not in tensors]
    if missing:
        raise ValueError(f"load_saelens: {path / WEIGHTS_FILENAME} lacks {missing} (it has {sorted(tensors)})")
    arrays = {name: np.asarray(tensors[name], np.float32) for name in needed}
    d_in, d_sae = config.get("d_in"), config.get("d_sae")
    if arrays["W_enc"].shape != (d_in, d_sae):
        raise ValueError(
            f"load_saelens: W_enc has shape {arrays['W_enc'].shape}, but cfg.json says d_in = {d_in}, d_sae = {d_sae}"
        )
    if saved == "topk" and config.get("rescale_acts_by_decoder_norm", False):
        norms = np.maximum(np.linalg.norm(arrays["W_dec"], axis=-1), np.float32(1e-8))
        arrays["W_enc"] = arrays["W_enc"] * norms
        arrays["b_enc"] = arrays["b_enc"] * norms
        arrays["W_dec"] = arrays["W_dec"] / norms[:, None]
    sae = SparseAutoencoder(
        jnp.asarray(arrays["W_enc"]),
        jnp.asarray(arrays["b_enc"]),
        jnp.asarray(arrays["W_dec"]),
        jnp.asarray(arrays["b_dec"]),
        None if saved != "jumprelu" else jnp.asarray(arrays["threshold"]),
        _LOADED_AS[saved],
        int(config.get("k", 32)),
        bool(config.get("apply_b_dec_to_input", True)),
    )
    log_sparsity = None
    if (path / SPARSITY_FILENAME).is_file():
        log_sparsity = np.asarray(safetensors.numpy.load_file(str(path / SPARSITY_FILENAME))["sparsity"], np.float32)
    return sae, config, log_sparsity
