import dataclasses


@dataclasses.dataclass(frozen=True)
class PointerNetworksConfig:
    """Settings of the pointer-network replication (P40): one network per problem (convex hull, Delaunay
    triangulation, planar travelling salesman), trained on small point sets and tested on larger ones.

    **Fields:**

    - `seed`: seeds the initial weights, the training and test point sets and the minibatches.
    - `tasks`: which problems to run, of "hull", "delaunay", "tsp".
    - `train_sizes`: per problem, the smallest and largest number of points of a training set (each training set's
      size is drawn uniformly in between).
    - `test_sizes`: per problem, the point counts it is tested on.
    - `train_examples`: training point sets per problem (drawn once, with their exact answers); `tsp_train_examples`
      for the travelling salesman, whose reference tours take longer.
    - `test_examples`: test point sets per problem and size.
    - `hidden_size`: of the embedding, both LSTMs and the attention.
    - `steps`: Adam steps per problem; `batch_size`; `learning_rate` (decayed by a cosine to a tenth).
    - `tsp_restarts`: random restarts of the 2-opt / or-opt search for reference tours of more than 10 points (10 or
      fewer: Held-Karp's optimum).
    """

    seed: int = 0
    tasks: tuple[str, ...] = ("hull", "delaunay", "tsp")
    train_sizes: tuple[tuple[str, int, int], ...] = (("hull", 5, 20), ("delaunay", 5, 10), ("tsp", 5, 20))
    test_sizes: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("hull", (5, 10, 20, 50)),
        ("delaunay", (5, 10, 20)),
        ("tsp", (5, 10, 20, 50)),
    )
    train_examples: int = 16000
    tsp_train_examples: int = 6000
    test_examples: int = 200
    hidden_size: int = 64
    steps: tuple[tuple[str, int], ...] = (("hull", 2000), ("delaunay", 1000), ("tsp", 1500))
    batch_size: int = 64
    learning_rate: float = 1e-3
    tsp_restarts: int = 1

    @classmethod
    def quick(cls) -> "PointerNetworksConfig":
        """The `--quick` variant: fewer sets, steps and test sizes, a smaller network."""
        return cls(
            train_sizes=(("hull", 5, 10), ("delaunay", 5, 6), ("tsp", 5, 8)),
            test_sizes=(("hull", (10, 50)), ("delaunay", (6,)), ("tsp", (8, 20))),
            train_examples=600,
            tsp_train_examples=600,
            test_examples=50,
            hidden_size=32,
            steps=(("hull", 150), ("delaunay", 150), ("tsp", 150)),
            batch_size=32,
            tsp_restarts=0,
        )
