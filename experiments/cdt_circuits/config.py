"""Configuration of the circuit-discovery experiment (P1's circuit half beside path patching, EAP, EAP-IG, ACDC)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    """One run over tasks and methods.

    **Fields:**

    - `seed`: seeds the task batches (and the toy models' training, through their cache).
    - `tasks`: task names: compiled tracr programs (`reverse`, `frac_prevs`, `sort`, `histogram`), trained toy
      models (`induction`, `ioi`) and real models (`smollm2_ioi`, `minilm_sst2`, `minilm_agnews`).
    - `methods`: `cdt`, `path_patching`, `acdc`, `eap`, `eap_ig`, `activation_patching` (each where the task's
      model allows it: the edge methods need a pre-norm model); `smollm2_methods`: those run on SmolLM2-135M
      (CD-T's sweep of its 300 nodes compiles in 17 s but decomposes the model 300 times per prompt, 53 s per
      prompt and level on 2 CPU cores, and path patching runs one masked forward per node and level, so both are
      left to a longer run: `Config(smollm2_methods=(..., "cdt", "path_patching"))`).
    - `batch`: prompts per compiled or trained task (tracr: drawn from every valid input); `real_batch`: prompts
      or sentences per real-model task.
    - `eap_ig_steps`: the integration steps of EAP-IG.
    - `acdc_threshold`: ACDC's tau, relative to the metric's range `|m(full) - m(empty)|`; `acdc_max_edges`: ACDC
      is not run on graphs with more edges (it takes one forward per edge: SmolLM2-135M's 70,651 would take hours).
    - `cdt_top_k`, `cdt_keep_fraction`: CD-T's first-level targets and its per-layer keep threshold;
      `cdt_prune_tolerance`: the drop in the metric its pruning tolerates, a fraction of the metric's range (the
      trained tasks' ground truth tolerates the same 10%).
    - `random_draws`: random circuits drawn per size for the faithfulness baseline.
    - `repeats`: timed calls per method on the compiled and trained tasks (the fastest is reported; the first call
      compiles); the real-model tasks are timed once, compilation included.
    """

    seed: int = 0
    tasks: tuple[str, ...] = (
        "reverse", "frac_prevs", "sort", "histogram", "induction", "ioi", "smollm2_ioi", "minilm_sst2",
        "minilm_agnews",
    )  # fmt: skip
    methods: tuple[str, ...] = ("cdt", "path_patching", "acdc", "eap", "eap_ig", "activation_patching")
    smollm2_methods: tuple[str, ...] = ("eap", "eap_ig", "activation_patching")
    batch: int = 32
    real_batch: int = 8
    eap_ig_steps: int = 16
    acdc_threshold: float = 0.01
    acdc_max_edges: int = 5000
    cdt_top_k: int = 4
    cdt_keep_fraction: float = 0.5
    cdt_prune_tolerance: float = 0.1
    random_draws: int = 10
    repeats: int = 2

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def quick() -> Config:
    """Minutes on a laptop: one compiled and one trained task, small batches, every method once."""
    return Config(tasks=("reverse", "induction"), batch=8, real_batch=4, eap_ig_steps=4, random_draws=3, repeats=1)
