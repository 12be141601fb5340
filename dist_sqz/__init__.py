"""dist_sqz: data-parallel training that measures exactly what gradient exchange costs."""

__version__ = "0.1.0"
