import dataclasses

from models.text_classifiers import FineTuning

NEUTRAL_PROMPTS = (
    "I think that",
    "Here is what happened:",
    "My friend told me that",
    "In the morning,",
    "The report says",
    "We talked about",
    "Let me tell you about",
    "Yesterday,",
    "It is",
    "The first thing to know is",
    "Everyone was talking about",
    "This is a story about",
)
"""Openers without a sentiment or a topic, after which the steered model continues."""


@dataclasses.dataclass(frozen=True)
class LatentSteeringConfig:
    """Settings of the steering comparison on SmolLM2-135M (P25 ACT and G-ACT, P36 model-native skills).

    **Fields:**

    - `seed`: seeds the choice of texts, the clustering and the sampling.
    - `targets`: `(task, class name)` concepts to steer toward: SST-2 sentiment (`"positive"`, `"negative"`) and
      AG News topics (`"World"`, `"Sports"`, `"Business"`, `"Sci/Tech"`).
    - `layers`: the layers whose residual stream (`blocks.L.resid_post`, mean-pooled over each text) is probed;
      `None` for all.
    - `steer_layer`: the layer steered.
    - `train_per_class`, `test_per_class`: labelled texts per class for the directions and probes, and for their
      held-out accuracy; `online_batch`: the size of each online refinement step.
    - `max_tokens`: texts are cut to this many tokens.
    - `k`: G-ACT's number of directions.
    - `target_kl`: the steering strength of every method is set so that the next-token distribution after the
      neutral prompts moves by this KL (nats).
    - `prompts`, `new_tokens`, `temperature`: continuations generated per condition.
    - `classifiers`: `None` for the fine-tuned MiniLM judges (`models.text_classifiers.DEFAULTS`), or one
      `FineTuning` for every task (the quick run's stand-in).
    - `pool_size`, `skills`, `selection_size`, `validation_size`, `random_draws`, `dev_size`: model-native skills:
      SST-2 training texts pooled, directions of the basis, texts selected, texts for choosing the direction,
      random selections to compare with, and SST-2 dev sentences the selections are scored on (`None`: all 872).
    - `bootstrap`: resamples for the intervals.
    - `blocks`: run SmolLM2 with only its first `blocks` blocks (then its final norm and unembedding), a cheap
      stand-in for smoke runs; `None` for the whole model.
    """

    seed: int = 0
    targets: tuple[tuple[str, str], ...] = (
        ("sst2", "positive"),
        ("sst2", "negative"),
        ("agnews", "Sports"),
        ("agnews", "Sci/Tech"),
    )
    layers: tuple[int, ...] | None = None
    steer_layer: int = 9
    train_per_class: int = 96
    test_per_class: int = 64
    online_batch: int = 8
    max_tokens: int = 32
    k: int = 4
    target_kl: float = 0.5
    prompts: tuple[str, ...] = NEUTRAL_PROMPTS
    new_tokens: int = 20
    temperature: float = 0.8
    classifiers: FineTuning | None = None
    pool_size: int = 1200
    skills: int = 8
    selection_size: int = 100
    validation_size: int = 400
    random_draws: int = 20
    dev_size: int | None = None
    bootstrap: int = 1000
    blocks: int | None = None

    @classmethod
    def quick(cls) -> "LatentSteeringConfig":
        """Sentiment only, four layers, four prompts, eight new tokens, the stand-in judge: a few minutes."""
        return cls(
            targets=(("sst2", "positive"), ("sst2", "negative")),
            layers=(0, 3, 6, 9),
            train_per_class=32,
            test_per_class=16,
            k=2,
            prompts=NEUTRAL_PROMPTS[:4],
            new_tokens=8,
            classifiers=FineTuning.quick(),
            pool_size=200,
            skills=4,
            selection_size=40,
            validation_size=100,
            random_draws=5,
            bootstrap=200,
        )
