"""Loaders for the data sets the experiments use, returning numpy arrays; files come from `jaxinterp.assets`."""

from ._fields import SAMPLE_IMAGES as SAMPLE_IMAGES
from ._fields import pixel_grid as pixel_grid
from ._fields import sample_image as sample_image
from ._fields import torus_distance as torus_distance
from ._images import digits as digits
from ._images import fashion_mnist as fashion_mnist
from ._images import mnist as mnist
from ._multivariate import UEA_PROBLEMS as UEA_PROBLEMS
from ._multivariate import read_ts as read_ts
from ._multivariate import uea as uea
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
