"""Deployment tooling (deploy/render_plain_envoy.py); importable by the tests."""
