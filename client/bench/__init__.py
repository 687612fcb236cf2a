"""`cnnserve bench`, the closed-loop load generator: pre-serialized requests, callers over processes, a table.

Built on the client library (cnnserve.client), whose config, connection and protocol helpers it imports; it never
imports the batch CLI (cnnserve.client.classify), and the library imports nothing from here.
"""
