"""Operator tooling: CLI, local stack, DynamoDB Local launcher, local server, demo, benchmark.

Never packaged into a Lambda zip (Chalice packages only ``app.py``, ``chalicelib/`` and ``vendor/``).
"""
