import dataclasses


@dataclasses.dataclass(frozen=True)
class NeuRBFConfig:
    """Settings of the NeuRBF replication (P10): fit scikit-image's sample photographs and the signed distance of a
    torus with NeuRBF, a grid-only field, a Fourier-feature MLP and a SIREN, each sized to the same parameter budget.

    **Fields:**

    - `seed`: the seed of every initialisation and of the distance field's samples.
    - `images`: names from `jaxinterp.data.SAMPLE_IMAGES`.
    - `image_size`: each image's central square, resized to this many pixels a side.
    - `budgets`: the parameter budgets for the images; every model is sized to at most each budget, as close as
      its size steps allow.
    - `image_steps`: full-batch Adam steps on every pixel.
    - `learning_rates`: Adam's initial step size per model (cosine decay to a tenth).
    - `rbf_features`, `rbf_neighbours`: NeuRBF's channels per kernel and the kernels read at each point.
    - `train_kernels`: whether NeuRBF's kernel centres and shapes are trained after their weighted k-means
      initialisation (the official configurations keep them fixed and train the kernels' features).
    - `grid_fraction`: the share of NeuRBF's budget given to its grid (the rest goes to kernels and the decoder).
    - `hidden_sizes`: the decoder of NeuRBF and of the grid-only field.
    - `mlp_depth`: hidden layers of the Fourier-feature MLP and the SIREN (their width fills the budget).
    - `sdf_budget`, `sdf_steps`, `sdf_batch`: the distance field's budget, Adam steps and points per step.
    - `sdf_samples`: training points (half uniform in the cube, half near the surface).
    - `sdf_resolution`: the evaluation grid's points per side (for the IoU of the inside).
    """

    seed: int = 0
    images: tuple[str, ...] = ("camera", "astronaut", "chelsea", "coffee")
    image_size: int = 64
    budgets: tuple[int, ...] = (2000, 5000)
    image_steps: int = 600
    learning_rates: tuple[tuple[str, float], ...] = (
        ("NeuRBF", 5e-3),
        ("grid", 1e-2),
        ("Fourier MLP", 1e-3),
        ("SIREN", 1e-4),
    )
    rbf_features: int = 16
    rbf_neighbours: int = 4
    grid_fraction: float = 0.35
    train_kernels: bool = False
    hidden_sizes: tuple[int, ...] = (32,)
    mlp_depth: int = 3
    sdf_budget: int = 8000
    sdf_steps: int = 800
    sdf_batch: int = 2048
    sdf_samples: int = 100_000
    sdf_resolution: int = 48

    @classmethod
    def quick(cls) -> "NeuRBFConfig":
        """The `--quick` variant: two 32x32 images, one budget, a short distance-field fit."""
        return cls(
            images=("camera", "astronaut"),
            image_size=32,
            budgets=(2000,),
            image_steps=200,
            sdf_budget=3000,
            sdf_steps=200,
            sdf_batch=1024,
            sdf_samples=20_000,
            sdf_resolution=24,
        )
