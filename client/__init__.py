"""The client: sync and asyncio client library, the batch-classification CLI, and the load generator."""
