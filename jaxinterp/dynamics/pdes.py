"""Solvers for the two PDEs of the operator-learning benchmarks (P34, and the Fourier neural operator before it), and
the random inputs they are solved from, in NumPy float64.

- `burgers`: the viscous Burgers equation `u_t + (u^2 / 2)_x = nu u_xx` on the periodic interval `[0, 1)`, solved
    pseudo-spectrally: exact (integrating-factor) diffusion, the nonlinear term by classical RK4 in Fourier space
    with 2/3-rule dealiasing. `burgers_cole_hopf` is the exact solution from the Cole-Hopf transform that checks it.
- `darcy`: the steady Darcy flow `-div(a grad u) = f` on the unit square with `u = 0` on the boundary, solved by the
    five-point finite-difference (finite-volume) scheme with face coefficients the mean of the two vertices' values.
- `periodic_resample`: trigonometric interpolation of a periodic function to another grid.
- `periodic_gaussian_random_field` and `darcy_coefficients`: the Gaussian random fields `N(0, sigma^2 (-Laplacian +
    tau^2)^(-alpha))` that the inputs are drawn from (the coefficient thresholded to two values for Darcy).

The formulas are in `docs/neural_operators.md#the-data`.
"""

import numpy as np
from jaxtyping import Float
from tqdm.auto import tqdm


def _check_positive_int(value, name: str, where: str, minimum: int = 1) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")


def periodic_gaussian_random_field(
    num: int, n: int, *, alpha: float = 2.0, tau: float = 5.0, sigma: float = 25.0, modes: int | None = None, seed: int
) -> Float[np.ndarray, "num n"]:
    """Samples of the periodic Gaussian random field `N(0, sigma^2 (-d^2/dx^2 + tau^2)^(-alpha))` on `[0, 1)`, on the
    grid `x_j = j / n`, with zero mean (the constant mode is left out).

    **Arguments:** `num` samples on `n` points; `alpha`, `tau`, `sigma` of the covariance (the defaults are the
    Fourier neural operator's Burgers inputs, `625 (-Laplacian + 25)^-2`); `modes`, the highest wavenumber kept
    (default `n // 2 - 1`, so that every sample is band-limited on its grid); `seed` for NumPy's generator.

    **Returns:** `[num, n]` float64.
    """
    _check_positive_int(num, "num", "periodic_gaussian_random_field")
    _check_positive_int(n, "n", "periodic_gaussian_random_field", 4)
    modes = n // 2 - 1 if modes is None else modes
    if not 1 <= modes < n // 2:
        raise ValueError(f"periodic_gaussian_random_field: modes must be in [1, {n // 2 - 1}] for n={n}, got {modes}")
    rng = np.random.default_rng(seed)
    k = np.arange(1, modes + 1)
    scale = sigma * ((2 * np.pi * k) ** 2 + tau**2) ** (-alpha / 2)
    coefficients = (rng.standard_normal((num, modes)) + 1j * rng.standard_normal((num, modes))) * scale / np.sqrt(2)
    spectrum = np.zeros((num, n // 2 + 1), complex)
    spectrum[:, 1 : modes + 1] = coefficients
    # u(x) = sum_k 2 Re(c_k exp(2 pi i k x)): each real mode has variance scale^2.
    return np.fft.irfft(spectrum, n=n, norm="forward")


def _dealiased_derivative(n: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.fft.rfftfreq(n, 1.0 / n)
    keep = k < n / 3
    return 2j * np.pi * k, keep


def burgers(
    u0: Float[np.ndarray, "batch n"],
    viscosity: float,
    t1: float,
    *,
    steps: int,
    progress: bool = False,
) -> Float[np.ndarray, "batch n"]:
    """Solve the viscous Burgers equation `u_t + u u_x = nu u_xx` on the periodic interval `[0, 1)` from `u0` to time
    `t1`, on the grid of `u0` (`x_j = j / n`).

    In Fourier space `dû/dt = -nu (2 pi k)^2 û - (i pi k) F(u^2)`. The diffusion is integrated exactly (the
    integrating factor `exp(-nu (2 pi k)^2 t)`), the rest by classical RK4 with `steps` equal steps; the product
    `u^2` is formed on the grid and its modes with `|k| >= n / 3` are dropped (2/3-rule dealiasing).

    **Arguments:** `u0` (`[batch, n]`, real), `viscosity` `nu > 0`, `t1 > 0`, `steps` (the time step is
    `t1 / steps`; the nonlinear term needs about `dt max|u| 2 pi n / 3 < 2.8`), `progress` for a progress bar.

    **Returns:** `u(t1)`, `[batch, n]` float64. Raises `FloatingPointError` if the solution blows up (too large a
    step).
    """
    u0 = np.asarray(u0, np.float64)
    if u0.ndim != 2 or u0.shape[1] < 4:
        raise ValueError(f"burgers: u0 must have shape [batch, n] with n >= 4, got {u0.shape}")
    if not np.all(np.isfinite(u0)):
        raise ValueError("burgers: u0 holds NaN or infinite values")
    if not (viscosity > 0 and t1 > 0):
        raise ValueError(f"burgers: viscosity and t1 must be positive, got {viscosity} and {t1}")
    _check_positive_int(steps, "steps", "burgers")
    n = u0.shape[1]
    ik, keep = _dealiased_derivative(n)
    dt = t1 / steps
    decay = -viscosity * (ik.imag**2)
    half = np.exp(decay * dt / 2)
    full = half**2

    def nonlinear(spectrum):
        u = np.fft.irfft(spectrum, n=n)
        return -0.5 * dt * ik * keep * np.fft.rfft(u * u)

    v = np.fft.rfft(u0)
    for _ in tqdm(range(steps), desc="burgers", disable=not progress, leave=False):
        a = nonlinear(v)
        b = nonlinear(half * (v + a / 2))
        c = nonlinear(half * v + b / 2)
        d = nonlinear(full * v + half * c)
        v = full * v + (full * a + 2 * half * (b + c) + d) / 6
    u = np.fft.irfft(v, n=n)
    if not np.all(np.isfinite(u)):
        raise FloatingPointError(f"burgers: the solution blew up with {steps} steps to t1={t1}; take more steps")
    return u


def burgers_cole_hopf(
    x: Float[np.ndarray, " n"],
    t: float,
    viscosity: float,
    mean: float,
    cosines: Float[np.ndarray, " modes"],
    sines: Float[np.ndarray, " modes"],
) -> Float[np.ndarray, " n"]:
    """The exact periodic solution of `u_t + u u_x = nu u_xx` from the Cole-Hopf transform `u = -2 nu phi_x / phi`,
    where `phi` solves the heat equation `phi_t = nu phi_xx`:

    `phi(x, t) = mean + sum_k exp(-nu (2 pi k)^2 t) (cosines[k-1] cos(2 pi k x) + sines[k-1] sin(2 pi k x))`.

    **Arguments:** the points `x`, the time `t >= 0`, `viscosity`, and `phi`'s coefficients; `phi` must stay
    positive (`mean > sum |cosines| + |sines|`).

    **Returns:** `u(x, t)`.
    """
    cosines, sines = np.asarray(cosines, np.float64), np.asarray(sines, np.float64)
    if mean <= np.sum(np.abs(cosines)) + np.sum(np.abs(sines)):
        raise ValueError("burgers_cole_hopf: mean must exceed sum |cosines| + |sines| so that phi stays positive")
    x = np.asarray(x, np.float64)[:, None]
    k = 2 * np.pi * np.arange(1, len(cosines) + 1)
    decay = np.exp(-viscosity * k**2 * t)
    phi = mean + np.sum(decay * (cosines * np.cos(k * x) + sines * np.sin(k * x)), axis=1)
    phi_x = np.sum(decay * k * (-cosines * np.sin(k * x) + sines * np.cos(k * x)), axis=1)
    return -2 * viscosity * phi_x / phi


def darcy_coefficients(
    num: int,
    n: int,
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
    high: float = 12.0,
    low: float = 3.0,
    modes: int = 32,
    seed: int,
) -> Float[np.ndarray, "num n n"]:
    """Piecewise-constant Darcy coefficients on the `n x n` vertex grid of the unit square (`x_i = i / (n - 1)`):
    `high` where a Gaussian random field `psi ~ N(0, (-Laplacian + tau^2)^(-alpha))` (cosine series, zero-flux
    eigenfunctions, wavenumbers below `modes` in each direction) is non-negative, `low` elsewhere (the Fourier
    neural operator's Darcy inputs: 12 and 3, `alpha = 2`, `tau = 3`).

    **Returns:** `[num, n, n]` float64.
    """
    _check_positive_int(num, "num", "darcy_coefficients")
    _check_positive_int(n, "n", "darcy_coefficients", 3)
    _check_positive_int(modes, "modes", "darcy_coefficients")
    rng = np.random.default_rng(seed)
    k = np.arange(modes)
    eigenvalues = np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2
    scale = eigenvalues ** (-alpha / 2)
    scale[0, 0] = 0.0
    x = np.linspace(0.0, 1.0, n)
    basis = np.cos(np.pi * x[:, None] * k[None, :])
    xi = rng.standard_normal((num, modes, modes)) * scale
    psi = np.einsum("ik,bkl,jl->bij", basis, xi, basis)
    return np.where(psi >= 0, high, low)


def darcy(
    a: Float[np.ndarray, "batch n n"],
    forcing: float | Float[np.ndarray, "batch n n"] = 1.0,
    *,
    progress: bool = False,
) -> Float[np.ndarray, "batch n n"]:
    """Solve `-div(a grad u) = f` on the unit square with `u = 0` on the boundary, on the `n x n` vertex grid of `a`
    (`h = 1 / (n - 1)`).

    At each interior vertex, `-(a_e (u_E - u) - a_w (u - u_W) + a_n (u_N - u) - a_s (u - u_S)) / h^2 = f`, with each
    face coefficient the mean of its two vertices' values; one sparse LU solve per sample. Second-order accurate for
    smooth `a` and `u`.

    **Arguments:** `a` (`[batch, n, n]`, positive), `forcing` `f` (a number or `[batch, n, n]`), `progress`.

    **Returns:** `u`, `[batch, n, n]` float64, zero on the boundary.
    """
    import scipy.sparse
    import scipy.sparse.linalg

    a = np.asarray(a, np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 3:
        raise ValueError(f"darcy: a must have shape [batch, n, n] with n >= 3, got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError("darcy: a must be finite and positive")
    batch, n, _ = a.shape
    f = np.broadcast_to(np.asarray(forcing, np.float64), a.shape)
    h2 = (1.0 / (n - 1)) ** 2
    m = n - 2
    index = np.arange(m * m).reshape(m, m)
    out = np.zeros_like(a)
    for b in tqdm(range(batch), desc="darcy", disable=not progress, leave=False):
        ab = a[b]
        centre = ab[1:-1, 1:-1]
        faces = {
            (1, 0): (centre + ab[2:, 1:-1]) / 2,
            (-1, 0): (centre + ab[:-2, 1:-1]) / 2,
            (0, 1): (centre + ab[1:-1, 2:]) / 2,
            (0, -1): (centre + ab[1:-1, :-2]) / 2,
        }
        rows, cols, values = [index.ravel()], [index.ravel()], [sum(faces.values()).ravel() / h2]
        for (di, dj), face in faces.items():
            i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
            ni, nj = i + di, j + dj
            inside = (ni >= 0) & (ni < m) & (nj >= 0) & (nj < m)
            rows.append(index[i[inside], j[inside]])
            cols.append(index[ni[inside], nj[inside]])
            values.append(-face[inside] / h2)
        matrix = scipy.sparse.csc_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
        )
        out[b, 1:-1, 1:-1] = scipy.sparse.linalg.spsolve(matrix, f[b, 1:-1, 1:-1].ravel()).reshape(m, m)
    return out


def periodic_resample(u: Float[np.ndarray, "*batch n"], points: int) -> Float[np.ndarray, "*batch points"]:
    """Resample periodic functions given on `n` points of `[0, 1)` to `points` points by trigonometric
    interpolation (zero-padding or truncating the Fourier series; exact for functions band-limited below both grids'
    Nyquist wavenumbers). The last axis is the grid."""
    u = np.asarray(u, np.float64)
    n = u.shape[-1]
    spectrum = np.fft.rfft(u, norm="forward")
    keep = min(n, points) // 2 + 1
    out = np.zeros((*u.shape[:-1], points // 2 + 1), complex)
    out[..., :keep] = spectrum[..., :keep]
    if points < n and points % 2 == 0:
        out[..., -1] = out[..., -1].real  # the new Nyquist mode of a real signal is real (its cosine part)
    if n < points and n % 2 == 0:
        out[..., n // 2] /= 2  # the old Nyquist cosine splits between wavenumbers +n/2 and -n/2
    return np.fft.irfft(out, n=points, norm="forward")
