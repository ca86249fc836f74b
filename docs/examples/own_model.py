"""Stands in for *your* Keras model: a classifier that ends in softmax, saved as .keras.

    python docs/examples/own_model.py /tmp/iris.keras

Fits scikit-learn's iris flowers (4 measurements in cm, 3 species) the way many tutorials do
(a final ``Dense(3, activation="softmax")`` and categorical cross-entropy), saves the model,
and prints Keras' own probabilities for one flower, to compare with the service's.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_iris

FLOWER = [[6.1, 2.8, 4.7, 1.2]]  # measurements of one flower, in cm


def main(path: str) -> None:
    """Fit, save, print ``model.predict`` for FLOWER."""
    keras.utils.set_random_seed(0)
    iris = load_iris()
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Normalization(mean=iris.data.mean(0), variance=iris.data.var(0)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),  # probabilities out, as so many models
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(iris.data, iris.target, epochs=60, batch_size=16, verbose=0)
    model.save(path)
    probs = model.predict(np.array(FLOWER), verbose=0)[0]
    names = ", ".join(f"{n} {p:.6f}" for n, p in zip(iris.target_names, probs, strict=True))
    print(f"saved {path}; Keras: {names}")


if __name__ == "__main__":
    main(sys.argv[1])
