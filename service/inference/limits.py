"""Request limits by what a request costs: instances, instances x elements, image pixels.

One global cap of 64 instances would refuse 200 two-feature vectors (8 KB) exactly like 64
images; counting elements (instances x the model's input size) lets small vectors come in
thousands while big images stay few. Per-model overrides come from
``SERVING_LIMIT_OVERRIDES``; every protocol's requests pass through the same check.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from service.errors import BatchTooLarge, ValidationFailed
from service.settings import Settings, SettingsError, model_overrides


@dataclass(frozen=True)
class Limits:
    """One model's request limits."""

    max_instances: int
    max_elements: int
    max_image_pixels: int  # one image
    max_request_pixels: int  # all of a request's images together

    def check(self, instances: int, elements_per_instance: int) -> None:
        """Refuse empty and oversized batches before any decoding or copying."""
        if instances == 0:
            raise ValidationFailed("the batch is empty: send at least one instance")
        elements = instances * elements_per_instance
        if instances > self.max_instances or elements > self.max_elements:
            raise BatchTooLarge(
                f"a batch of {instances:,} instances ({elements:,} input elements) is above "
                f"this model's limits of {self.max_instances:,} instances and "
                f"{self.max_elements:,} elements",
                details={
                    "instances": instances,
                    "elements": elements,
                    "max_instances": self.max_instances,
                    "max_elements": self.max_elements,
                },
            )


class LimitTable:
    """The limits of every model: the settings' defaults with per-model overrides."""

    def __init__(self, settings: Settings) -> None:
        self.default = Limits(
            settings.max_instances,
            settings.max_elements,
            settings.max_image_pixels,
            settings.max_request_pixels,
        )
        overrides = model_overrides(
            "SERVING_LIMIT_OVERRIDES", settings.limit_overrides, (f.name for f in fields(Limits))
        )
        for name, values in overrides.items():
            for key, value in values.items():
                if type(value) is not int or value < 1:
                    raise SettingsError(
                        f"SERVING_LIMIT_OVERRIDES: {name}.{key} must be a positive integer"
                    )
        self._models = {name: replace(self.default, **values) for name, values in overrides.items()}

    def of(self, model: str) -> Limits:
        """A model's limits."""
        return self._models.get(model, self.default)
