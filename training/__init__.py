"""Training: data readers (IDX files, image folders), the model zoo, and the training loop."""
