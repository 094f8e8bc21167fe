"""Forecasting maths: hourly availability series, features, quantile models, backtests (no I/O)."""
