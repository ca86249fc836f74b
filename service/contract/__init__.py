"""The model repository contract, shared with ``training/``: metadata, preprocessing,
post-processing, image decoding and pixel functions. Imports without Flask or onnxruntime."""
