"""Operator tooling: CLI, local stack, deploy, benchmark (never packaged into a Lambda zip)."""
