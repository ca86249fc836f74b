"""The Open Inference Protocol from tritonclient.

python docs/examples/tritonclient_example.py HOST:PORT
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from PIL import Image

client = httpclient.InferenceServerClient(sys.argv[1] if len(sys.argv) > 1 else "localhost:8000")
print(client.is_server_ready(), client.get_model_metadata("fashion-mnist")["versions"])

# The model's own tensor: NHWC float32 in 0..1, sent as binary (tritonclient's default).
pixels = np.asarray(Image.open("docs/examples/ankle-boot.png").convert("L"), np.float32) / 255
tensor = httpclient.InferInput("input", [1, 28, 28, 1], "FP32")
tensor.set_data_from_numpy(pixels.reshape(1, 28, 28, 1))
result = client.infer("fashion-mnist", [tensor])
print(result.as_numpy("label"), result.as_numpy("probabilities").max())

# Or the image file itself, preprocessed by the service; the two most probable classes.
with open("docs/examples/sneaker-on-paper.jpg", "rb") as photo:
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([photo.read()], dtype=object))
top2 = httpclient.InferRequestedOutput("probabilities", class_count=2)
print(client.infer("fashion-mnist", [image], outputs=[top2]).as_numpy("probabilities"))
