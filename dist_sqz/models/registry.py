"""The model registry: `@MODELS.register("name")` on a builder taking `num_classes`."""

from dist_sqz.registry import Registry

MODELS = Registry("model")
