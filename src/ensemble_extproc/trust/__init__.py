"""Learned trust: members' accuracies from their agreement, and members that move together.

See docs/trust.md. The pure parts: ``stats`` (decayed sufficient statistics), ``fit``
(the one-coin estimate, flags, intervals), ``weights`` (what strategies use),
``influence`` (one client's bound). The edges: ``service`` (feeding, snapshots),
``persist`` (files), ``report`` (JSON and Prometheus).
"""
