"""The native API: /predict (JSON, multipart, raw images), /models, /health."""
