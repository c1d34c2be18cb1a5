"""The SAELens anchor of `sae_training.py`: train TopK SAEs with SAELens's own trainer on cached activations.

Runs in its own environment with torch and sae-lens (e.g. a venv made with `pip install torch==2.13.0` then
`pip install sae-lens==6.54.12`), started by `sae_training.py --saelens PYTHON`:

    PYTHON experiments/benchmarks/sae_training_saelens.py --folder FOLDER

`FOLDER/activations.npy` holds the training activations (float32 `[n, d_in]`), `FOLDER/order.npy` the row indices
of every batch (int `[steps, batch]`, the order both libraries train in) and `FOLDER/settings.json` the sizes
(`d_sae`, the list of `k`, learning rate, seed). For each `k` this builds a `TopKTrainingSAE` (SAELens's defaults:
`rescale_acts_by_decoder_norm`, decoder rows initialised at norm 0.1, AuxK coefficient 1, dead window 1000), trains
it with `SAETrainer` (Adam, gradient clipping at 1, the dead-latent statistics, as `sae_lens` trains) on the
batches in that order, saves it with `save_inference_model` into `FOLDER/saelens_k<k>/`, and writes the timings to
`FOLDER/saelens.json`: the first step (mostly start-up) and the rest separately.
"""

import argparse
import json
import os
import pathlib
import time

import numpy as np
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer


class TimedBatches:
    """The batches in the order given, recording the time at which each is asked for (the previous step's end)."""

    def __init__(self, data: torch.Tensor, order: np.ndarray):
        self.data, self.order, self.asked = data, order, []

    def __iter__(self):
        for index in self.order:
            self.asked.append(time.perf_counter())
            yield self.data[torch.from_numpy(index)]
        self.asked.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, type=pathlib.Path)
    folder = parser.parse_args().folder
    settings = json.loads((folder / "settings.json").read_text())
    torch.set_num_threads(os.cpu_count() or 1)
    data = torch.from_numpy(np.load(folder / "activations.npy"))
    order = np.load(folder / "order.npy")
    steps, batch = order.shape
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "runs": {}}
    import sae_lens

    out["sae_lens"] = sae_lens.__version__
    for k in settings["k"]:
        torch.manual_seed(settings["seed"])
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=data.shape[1], d_sae=settings["d_sae"], k=k))
        trainer_cfg = SAETrainerConfig(
            total_training_samples=steps * batch,
            train_batch_size_samples=batch,
            lr=settings["learning_rate"],
            lr_end=settings["learning_rate"],
            device="cpu",
            feature_sampling_window=10**9,
        )
        batches = TimedBatches(data, order)
        trainer = SAETrainer(trainer_cfg, sae, iter(batches))
        started = time.perf_counter()
        trainer.fit()
        ended = time.perf_counter()
        asked = batches.asked
        first = asked[1] - asked[0] if len(asked) > 1 else float("nan")
        rest = asked[steps - 1] - asked[1] if steps > 2 else float("nan")
        sae.save_inference_model(folder / f"saelens_k{k}")
        out["runs"][str(k)] = {
            "fit_s": ended - started,
            "first_step_s": first,
            "steady_s": rest,
            "steady_steps": steps - 2,
            "steady_tokens_per_s": (steps - 2) * batch / rest,
        }
        print(f"SAELens k={k}: {out['runs'][str(k)]['steady_tokens_per_s']:.0f} tokens/s", flush=True)
    (folder / "saelens.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
