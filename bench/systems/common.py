"""What every compared system shares: class names and the answer's shape (numpy only)."""

from service.contract.postprocessing import probabilities

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIRCLES_CLASSES = ["outer", "inner"]


def answer(logits, classes) -> dict:
    """Label, confidence and every class probability per row (softmax/sigmoid once)."""
    return {
        "predictions": [
            {
                "label": classes[int(p.argmax())],
                "confidence": float(p.max()),
                "probabilities": dict(zip(classes, map(float, p), strict=True)),
            }
            for p in probabilities(logits)
        ]
    }
