"""Export: checkpoint to ONNX with the model card embedded, parity check against PyTorch, repository writer."""
