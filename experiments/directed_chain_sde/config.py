"""Configuration of the directed chain SDE experiment."""

import dataclasses

DATASETS = ("opinion", "fitzhugh_nagumo", "sp500", "electricity")
GENERATORS = ("DC-SDE", "neural SDE (SDE-GAN)", "latent SDE")


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: every generator of `generators` trained on every data set of `datasets`, one seed.

    **Fields:**

    - `seed`: the seed of the simulated data, the models, the batches and the scores.
    - `datasets`, `generators`: which of `DATASETS` and `GENERATORS` to run.
    - `num_paths`: simulated paths (particles) in each of the training and test sets; at most this many windows of
        a real series in each.
    - `opinion_particles`: the particles of each simulated opinion system (training and test), of which
        `num_paths` are kept at random: a large system is closer to the mean-field law.
    - `num_times`, `substeps`: the simulated paths' grid on `[0, 1]` and Euler-Maruyama steps between its points.
    - `sp500_columns`, `sp500_length`, `sp500_stride`: the S&P 500 windows (global min-max scaling, as P31).
    - `electricity_length`: the electricity windows, one a day (half-hours), global min-max scaling.
    - `test_fraction`: the share of a real series' windows (the last ones) held out.
    - `depth`, `opinion_depth`: the signature depth of the loss and of the signature MMD (opinion dynamics has one
        channel, so it affords P31's deeper signature).
    - `width`, `mlp_depth`, `hidden_size`: the MLPs' width and hidden layers, and the hidden state of the SDE-GAN's
        generator and discriminator and of the latent SDE's latent space.
    - `noise_size`: the DC-SDE's Brownian dimension (P31: 3).
    - `batch_size`, `learning_rate`: training batches and the DC-SDE's and latent SDE's Adam learning rate.
    - `dc_steps`, `gan_steps`, `latent_steps`: training steps of each generator.
    - `gan_lipschitz`: the SDE-GAN's Lipschitz control (`"clip"`, the thesis's, or `"gradient_penalty"`).
    - `gan_generator_lr`, `gan_discriminator_lr`: the SDE-GAN's Adam learning rates.
    - `latent_kl_weight`, `latent_error_weight`: the latent SDE's KL weight and error-regulariser weight.
    - `chain_links`: DC-SDE generation runs this many links of the chain from the real test paths; the last is scored.
    - `num_generated`: generated paths scored against the test set (at most the test set's size).
    - `score_steps`: training steps of the discriminative and predictive scores' GRUs.
    - `mode_time`, `mode_tolerance`, `mode_min_height`: opinion dynamics' marginal is compared at this time; a
        generator reproduces the bimodality if its marginal has exactly two modes (maxima of the density estimate at
        least `mode_min_height` times the highest, `jaxinterp.dynamics.marginal_modes`), as the test set must, each
        within `mode_tolerance` of the test set's.
    """

    seed: int = 0
    datasets: tuple[str, ...] = DATASETS
    generators: tuple[str, ...] = GENERATORS
    num_paths: int = 512
    opinion_particles: int = 4096
    num_times: int = 26
    substeps: int = 4
    sp500_columns: tuple[str, ...] = ("Close", "Volume")
    sp500_length: int = 24
    sp500_stride: int = 5
    electricity_length: int = 48
    test_fraction: float = 0.2
    depth: int = 4
    opinion_depth: int = 6
    width: int = 32
    mlp_depth: int = 1
    hidden_size: int = 16
    noise_size: int = 3
    batch_size: int = 64
    learning_rate: float = 3e-3
    dc_steps: int = 300
    gan_steps: int = 300
    latent_steps: int = 150
    gan_lipschitz: str = "clip"
    gan_generator_lr: float = 1e-3
    gan_discriminator_lr: float = 3e-3
    latent_kl_weight: float = 0.1
    latent_error_weight: float = 0.1
    chain_links: int = 3
    num_generated: int = 256
    score_steps: int = 150
    mode_time: float = 0.5
    mode_tolerance: float = 0.2
    mode_min_height: float = 0.35

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def quick(cls) -> "Config":
        """Opinion dynamics only, small sizes, few steps: about a minute."""
        return cls(
            datasets=("opinion",),
            num_paths=256,
            opinion_particles=256,
            num_times=11,
            substeps=10,
            width=16,
            hidden_size=8,
            dc_steps=20,
            gan_steps=20,
            latent_steps=5,
            num_generated=128,
            score_steps=30,
        )
