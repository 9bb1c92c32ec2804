"""Adaptive ensembling: cheap per-request confidence signals and the admission gate.

``difficulty`` (the module) estimates, from the prompt alone and without any model, how
hard a request is. Import from the submodules; nothing is re-exported here, so that a
function never hides a module of the same name.
"""
