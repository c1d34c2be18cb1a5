import dataclasses

from models.text_classifiers import FineTuning


@dataclasses.dataclass(frozen=True)
class LocalAttributionConfig:
    """Settings of the local-attribution comparison (paper P1, local half).

    **Fields:**

    - `seed`: seeds the choice of held-out texts and the sampling methods' keys.
    - `tasks`: `"sst2"` and/or `"agnews"`.
    - `classifiers`: `None` for the fine-tuned classifiers (`models.text_classifiers.DEFAULTS`), or one
      `FineTuning` used for every task (the quick run's stand-in).
    - `methods`: attribution methods compared (`jaxinterp.attribution.METHODS`).
    - `matched_methods`: methods also run at CD-T's budget (as many samples as the text has words), rows
      `method@cd`: the comparison at equal cost.
    - `n_texts`: held-out texts per task for the faithfulness table.
    - `budget`: model evaluations per text for KernelSHAP, LIME (samples) and integrated gradients (steps).
    - `removal`: how words are removed for the perturbation methods and the curves (`"drop"`: masked out).
    - `max_tokens`: texts are cut to this many tokens.
    - `mining_texts`: the most texts per task whose phrases (up to `max_width` words) are mined for contrasts (at
      most all 872 SST-2 dev sentences and 300 held-out AG News articles, `run.MINING_TEXTS`).
    - `max_width`, `mining_top`, `mining_min_count`: phrase width, list length and fewest occurrences.
    - `picture_texts`: texts in the heatmap table.
    """

    seed: int = 0
    tasks: tuple[str, ...] = ("sst2", "agnews")
    classifiers: FineTuning | None = None
    methods: tuple[str, ...] = ("cd", "hierarchical", "shap", "lime", "ig", "occlusion")
    matched_methods: tuple[str, ...] = ("shap", "lime")
    n_texts: int = 40
    budget: int = 128
    removal: str = "drop"
    max_tokens: int = 64
    mining_texts: int = 872
    max_width: int = 3
    mining_top: int = 12
    mining_min_count: int = 3
    picture_texts: int = 6

    @classmethod
    def quick(cls) -> "LocalAttributionConfig":
        """SST-2 only, on the small stand-in classifier, four texts, budget 64: a smoke run of a few minutes."""
        return cls(
            tasks=("sst2",),
            classifiers=FineTuning.quick(),
            n_texts=4,
            budget=64,
            mining_texts=16,
            mining_min_count=1,
            picture_texts=3,
        )
