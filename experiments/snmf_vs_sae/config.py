import dataclasses

from experiments.latent_steering.config import NEUTRAL_PROMPTS
from models.text_classifiers import FineTuning


@dataclasses.dataclass(frozen=True)
class SNMFvsSAEConfig:
    """Settings of the comparison of SNMF features, SAE latents and difference-in-means on SmolLM2-135M (P5).

    **Fields:**

    - `seed`: seeds the choice of texts, the factorisations' starts, the SAE and the sampling.
    - `layer`: the MLP whose activations (`blocks.L.mlp.post`, `[tokens, 1536]`) are decomposed and steered.
    - `targets`: `(task, class name)` concepts steered toward: SST-2 sentiment (`"positive"`, `"negative"`) and AG
      News topics (`"World"`, `"Sports"`, `"Business"`, `"Sci/Tech"`). Every class of each task named is used as
      text, and every one is a concept for detection.
    - `train_per_class`, `test_per_class`: labelled texts per class for choosing each method's concept feature, and
      for its held-out detection AUROC.
    - `max_tokens`: texts are cut to this many tokens.
    - `snmf_rank`, `snmf_sparsity`, `snmf_iterations`, `snmf_patience`: SNMF of every token of those texts (labels
      unused), `k` features keeping `sparsity` of the 1536 neurons each.
    - `sae_width`, `sae_k`, `sae_steps`, `sae_batch`: a TopK SAE on the same tokens (when `jaxinterp.features.sae`
      is present).
    - `l0s`: the L0 (non-zero codes per token) at which reconstruction is compared.
    - `target_kls`: each direction's strength is set so that the next-token distribution after the neutral prompts
      moves by each of these KLs (nats), with `+alpha` and with `-alpha`.
    - `prompts`, `new_tokens`, `temperature`: continuations generated per condition.
    - `classifiers`: `None` for the fine-tuned MiniLM judges (`models.text_classifiers.DEFAULTS`), or one
      `FineTuning` for every task (the smoke runs' stand-in).
    - `bootstrap`: resamples for the intervals.
    - `examples`: top-activating token contexts shown per chosen feature.
    - `blocks`: run SmolLM2 with only its first `blocks` blocks (then its final norm and unembedding), a cheap
      stand-in for smoke runs; `None` for the whole model.
    """

    seed: int = 0
    layer: int = 9
    targets: tuple[tuple[str, str], ...] = (("sst2", "positive"), ("agnews", "Sports"))
    train_per_class: int = 96
    test_per_class: int = 64
    max_tokens: int = 32
    snmf_rank: int = 64
    snmf_sparsity: float = 0.01
    snmf_iterations: int = 300
    snmf_patience: int = 50
    sae_width: int = 2048
    sae_k: int = 32
    sae_steps: int = 600
    sae_batch: int = 256
    l0s: tuple[int, ...] = (8, 32)
    target_kls: tuple[float, ...] = (0.05, 0.1, 0.25)
    prompts: tuple[str, ...] = NEUTRAL_PROMPTS[:8]
    new_tokens: int = 8
    temperature: float = 0.8
    classifiers: FineTuning | None = None
    bootstrap: int = 1000
    examples: int = 5
    blocks: int | None = None

    @classmethod
    def quick(cls) -> "SNMFvsSAEConfig":
        """Sentiment only, 24 + 16 texts per class, one KL target, four prompts, six new tokens, the stand-in judge."""
        return cls(
            targets=(("sst2", "positive"),),
            train_per_class=24,
            test_per_class=16,
            max_tokens=24,
            snmf_rank=16,
            snmf_iterations=60,
            sae_width=256,
            sae_k=16,
            sae_steps=150,
            l0s=(4, 16),
            target_kls=(0.1,),
            prompts=NEUTRAL_PROMPTS[:4],
            new_tokens=6,
            classifiers=FineTuning.quick(),
            bootstrap=200,
            examples=3,
        )
