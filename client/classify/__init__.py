"""`cnnserve classify`, the batch CLI: inputs expanded to paths, a bounded streaming job, rows written in order.

Built on the client library (cnnserve.client): it imports the library and never the load generator
(cnnserve.client.bench); the library imports nothing from here. `--local` (local.py) loads onnxruntime when asked.
"""
