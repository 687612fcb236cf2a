"""The gRPC server: model repository, onnxruntime runtime, dynamic batcher, services, metrics and app."""
