"""Powertools logger and metrics shared by every entry point."""

from aws_lambda_powertools import Logger, Metrics

__all__ = ["logger", "metrics"]

logger = Logger(service="streamfold")
metrics = Metrics(namespace="streamfold", service="streamfold")
