import numpy as np
import pytest

from jaxinterp.dynamics import pdes


def test_burgers_solver_matches_the_cole_hopf_solution():
    viscosity, n = 0.05, 128
    x = np.arange(n) / n
    coefficients = dict(mean=2.0, cosines=np.array([0.6, 0.2, 0.1]), sines=np.array([0.3, -0.4, 0.2]))
    u0 = pdes.burgers_cole_hopf(x, 0.0, viscosity, **coefficients)
    exact = pdes.burgers_cole_hopf(x, 0.5, viscosity, **coefficients)
    errors = [np.max(np.abs(pdes.burgers(u0[None], viscosity, 0.5, steps=s)[0] - exact)) for s in (25, 50)]
    assert errors[1] < 1e-6 and errors[0] / errors[1] > 10  # RK4: about 16 per halving
    with pytest.raises(ValueError, match="NaN"):
        pdes.burgers(np.full((1, 8), np.nan), viscosity, 0.5, steps=2)


def test_darcy_solver_matches_a_manufactured_solution_to_second_order():
    """`u = sin(pi x) sin(pi y)` with a smooth variable `a`, `f = -div(a grad u)`: the error falls about four-fold
    when the grid spacing halves."""

    def error(n):
        x = np.linspace(0.0, 1.0, n)
        X, Y = np.meshgrid(x, x, indexing="ij")
        s, c = np.sin, np.cos
        a = 1 + 0.5 * s(2 * np.pi * X) * c(np.pi * Y)
        a_x, a_y = np.pi * c(2 * np.pi * X) * c(np.pi * Y), -0.5 * np.pi * s(2 * np.pi * X) * s(np.pi * Y)
        u = s(np.pi * X) * s(np.pi * Y)
        u_x, u_y = np.pi * c(np.pi * X) * s(np.pi * Y), np.pi * s(np.pi * X) * c(np.pi * Y)
        f = -(a_x * u_x + a_y * u_y - 2 * np.pi**2 * a * u)
        return np.max(np.abs(pdes.darcy(a[None], f[None])[0] - u))

    coarse, fine = error(17), error(33)
    assert fine < 1e-3 and 3.5 < coarse / fine < 4.5
    with pytest.raises(ValueError, match="positive"):
        pdes.darcy(-np.ones((1, 5, 5)))


def test_random_inputs_and_resampling():
    u = pdes.periodic_gaussian_random_field(4, 64, seed=0)
    np.testing.assert_allclose(np.mean(u, axis=1), 0.0, atol=1e-12)  # no constant mode
    fine = pdes.periodic_resample(u, 256)
    np.testing.assert_allclose(fine[:, ::4], u, atol=1e-12)  # band-limited: interpolation keeps the samples
    np.testing.assert_allclose(pdes.periodic_resample(fine, 64), u, atol=1e-12)
    np.testing.assert_array_equal(pdes.periodic_gaussian_random_field(4, 64, seed=0), u)
    assert not np.allclose(pdes.periodic_gaussian_random_field(4, 64, seed=1), u)
    a = pdes.darcy_coefficients(3, 17, seed=1)
    assert set(np.unique(a)) == {3.0, 12.0}
