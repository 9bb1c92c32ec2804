"""Metrics (Prometheus) and structured logs; the rest of the code calls small methods here."""
