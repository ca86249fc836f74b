"""The models a worker serves: the registry, their lifecycle (watching the repository, the
version policy, loading), serving.json, model control, the onnxruntime predictor and
dynamic batching around it."""
