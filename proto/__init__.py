"""Protocol buffers (cnnserve.v1 Classifier, KServe v2 / Open Inference Protocol) and their generated code."""
