"""Header names shared by the processor, the ensemble upstream and the Envoy config."""

# Client-facing request headers (untrusted input).
ENABLE = "x-ensemble-enable"
MODELS = "x-ensemble-models"
STRATEGY = "x-ensemble-strategy"
MIN_RESPONSES = "x-ensemble-min-responses"
REQUEST_HEADERS = (ENABLE, MODELS, STRATEGY, MIN_RESPONSES)

# Internal headers: only the processor sets them; copies sent by clients are removed.
# Envoy's ensemble route matches on ROUTE.
ROUTE = "x-ensemble-route"
ROUTE_VALUE = "ensemble"
PROFILE = "x-ensemble-profile"
DECISION = "x-ensemble-decision"
TIMEOUT = "x-ensemble-timeout"
SIGNATURE = "x-ensemble-signature"
INTERNAL = (ROUTE, PROFILE, DECISION, TIMEOUT, SIGNATURE)
# What the signature covers: everything the upstream acts on.
SIGNED = (MODELS, STRATEGY, MIN_RESPONSES, PROFILE, DECISION, TIMEOUT)

# Response headers (the decision ones are added by Envoy from the processor's metadata).
RESP_DECISION = "x-ensemble-decision"
RESP_CONFIDENCE = "x-ensemble-confidence"
# On the ensemble route: the Envoy cluster that answered (the default model as fallback).
RESP_SERVED_BY = "x-ensemble-served-by"

# Response headers of the ensemble upstream.
RESP_STRATEGY = "x-ensemble-strategy"
RESP_MODELS_QUERIED = "x-ensemble-models-queried"
RESP_RESPONSES_RECEIVED = "x-ensemble-responses-received"
RESP_SELECTED_MODEL = "x-ensemble-selected-model"
RESP_AGREEMENT = "x-ensemble-agreement"
# How many models a cascade asked before it accepted an answer.
RESP_CASCADE_DEPTH = "x-ensemble-cascade-depth"
