"""Request limits by what a request costs: instances, instances x elements, image pixels,
images, and the time their decoding may take.

One global cap of 64 instances would refuse 200 two-feature vectors (8 KB) exactly like 64
images; counting elements (instances x the model's input size) lets small vectors come in
thousands while big images stay few. Images have a count of their own: each costs a
millisecond or more to open and decode however few its pixels, so 4,096 of 100 bytes would
cost seconds. Per-model overrides come from ``SERVING_LIMIT_OVERRIDES``; every protocol's
requests pass through the same check.
"""

from __future__ import annotations

import math
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
    max_images: int  # encoded images in one request
    decode_timeout_s: float  # seconds a request's images may take to decode

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

    def check_images(self, images: int) -> None:
        """Refuse more encoded images than the cap, before any is opened."""
        if images > self.max_images:
            raise BatchTooLarge(
                f"a request of {images:,} images is above this model's limit of "
                f"{self.max_images:,} images (SERVING_MAX_IMAGES)",
                details={"images": images, "max_images": self.max_images},
            )


class LimitTable:
    """The limits of every model: the settings' defaults with per-model overrides."""

    def __init__(self, settings: Settings) -> None:
        self.default = Limits(
            settings.max_instances,
            settings.max_elements,
            settings.max_image_pixels,
            settings.max_request_pixels,
            settings.max_images,
            settings.decode_timeout_s,
        )
        overrides = model_overrides(
            "SERVING_LIMIT_OVERRIDES", settings.limit_overrides, (f.name for f in fields(Limits))
        )
        for name, values in overrides.items():
            for key, value in values.items():
                kinds = (int, float) if key == "decode_timeout_s" else (int,)
                if type(value) not in kinds or not 0 < value < math.inf:
                    kind = "number" if key == "decode_timeout_s" else "integer"
                    raise SettingsError(
                        f"SERVING_LIMIT_OVERRIDES: {name}.{key} must be a positive {kind}"
                    )
        self._models = {name: replace(self.default, **values) for name, values in overrides.items()}
        # A multipart body is parsed before its model is known: it may hold as many images
        # as the most generous model takes.
        self.most_images = max(
            limits.max_images for limits in (self.default, *self._models.values())
        )

    def of(self, model: str) -> Limits:
        """A model's limits."""
        return self._models.get(model, self.default)
