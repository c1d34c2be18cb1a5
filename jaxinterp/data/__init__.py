"""Loaders for the data sets the experiments use, returning numpy arrays; files come from `jaxinterp.assets`."""

from ._geometry import canonical_tour as canonical_tour
from ._geometry import convex_hull as convex_hull
from ._geometry import delaunay_triangles as delaunay_triangles
from ._geometry import held_karp as held_karp
from ._geometry import improve_tour as improve_tour
from ._geometry import random_points as random_points
from ._geometry import reference_tour as reference_tour
from ._geometry import tour_length as tour_length
from ._images import digits as digits
from ._images import fashion_mnist as fashion_mnist
from ._images import mnist as mnist
from ._news import AG_NEWS_CLASSES as AG_NEWS_CLASSES
from ._news import ag_news as ag_news
from ._news import ag_news_split as ag_news_split
from ._sentiment import rotten_tomatoes as rotten_tomatoes
from ._sentiment import sst2 as sst2
from ._timeseries import SP500_COLUMNS as SP500_COLUMNS
from ._timeseries import electricity_demand as electricity_demand
from ._timeseries import electricity_demand_windows as electricity_demand_windows
from ._timeseries import sliding_windows as sliding_windows
from ._timeseries import sp500 as sp500
from ._timeseries import sp500_windows as sp500_windows
