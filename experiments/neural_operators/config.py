import dataclasses


@dataclasses.dataclass(frozen=True)
class NeuralOperatorsConfig:
    """Settings of the operator-learning replication (P34): a Fourier neural operator and a CNN made an operator by
    P34's recipe, each trained at one grid on 1-D Burgers and 2-D Darcy flow data solved here, and evaluated at
    coarser and finer grids.

    **Fields:**

    - `seed`: seeds the random inputs, the initial weights and the minibatches.
    - `train_samples`, `test_samples`: per PDE.
    - `burgers_viscosity`, `burgers_time`: `nu` and the final time `T` of the Burgers map `u(0) -> u(T)`.
    - `burgers_solve_points`, `burgers_solve_steps`: the grid and the RK4 steps of the pseudo-spectral solve (finer
      grids are its trigonometric interpolation, exact for the resolved solution).
    - `burgers_train_points`, `burgers_test_points`: the training grid and the evaluation grids.
    - `darcy_solve_points`: the finest vertex grid the Darcy problems are solved on (coarser grids are subsamples);
      `darcy_train_points`, `darcy_test_points`: the training and evaluation grids.
    - `fno_width`, `fno_modes`, `fno_depth`: the FNO's channels, Fourier modes per axis and Fourier layers (the
      2-D model uses `fno_modes_2d` and `width_2d`).
    - `cnn_width`, `cnn_kernel`, `cnn_depth`: the convolutional operator's channels, kernel taps (at the training
      grid) and layers (2-D: `width_2d`, `cnn_kernel_2d`).
    - `steps`, `batch_size`, `learning_rate`: Adam on the relative L2 loss, the step size decayed by a cosine to a
      tenth; `darcy_steps`, `darcy_batch_size` for the 2-D models, `cnn_width_2d` their CNN's channels.
    """

    seed: int = 0
    train_samples: int = 700
    test_samples: int = 100
    burgers_viscosity: float = 0.01
    burgers_time: float = 1.0
    burgers_solve_points: int = 256
    burgers_solve_steps: int = 500
    burgers_train_points: int = 128
    burgers_test_points: tuple[int, ...] = (64, 128, 256, 512)
    darcy_solve_points: int = 65
    darcy_train_points: int = 33
    darcy_test_points: tuple[int, ...] = (17, 33, 65)
    fno_width: int = 32
    fno_modes: int = 16
    fno_depth: int = 4
    fno_modes_2d: int = 8
    width_2d: int = 16
    cnn_width: int = 32
    cnn_kernel: int = 5
    cnn_kernel_2d: int = 5
    cnn_depth: int = 4
    cnn_width_2d: int = 12
    steps: int = 1500
    batch_size: int = 20
    darcy_steps: int = 1000
    darcy_batch_size: int = 10
    learning_rate: float = 1e-3

    @classmethod
    def quick(cls) -> "NeuralOperatorsConfig":
        """The `--quick` variant: 100 training samples per PDE, smaller models, 200 steps."""
        return cls(
            train_samples=100,
            test_samples=20,
            fno_width=16,
            fno_modes=8,
            fno_modes_2d=6,
            width_2d=8,
            cnn_width=16,
            cnn_width_2d=8,
            steps=200,
            darcy_steps=100,
        )
