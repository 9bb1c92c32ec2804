"""Header names shared by the processor, the ensemble upstream and the Envoy config."""

# Client-facing request headers (untrusted input).
ENABLE = "x-ensemble-enable"
MODELS = "x-ensemble-models"
STRATEGY = "x-ensemble-strategy"
MIN_RESPONSES = "x-ensemble-min-responses"
REQUEST_HEADERS = (ENABLE, MODELS, STRATEGY, MIN_RESPONSES)

# Internal routing header: Envoy's ensemble route matches on it. Only the processor may set
# it; a copy sent by a client is always removed.
ROUTE = "x-ensemble-route"
ROUTE_VALUE = "ensemble"

# Response headers of the ensemble upstream.
RESP_STRATEGY = "x-ensemble-strategy"
RESP_MODELS_QUERIED = "x-ensemble-models-queried"
RESP_RESPONSES_RECEIVED = "x-ensemble-responses-received"
RESP_SELECTED_MODEL = "x-ensemble-selected-model"
RESP_AGREEMENT = "x-ensemble-agreement"
# How many models a cascade asked before it accepted an answer.
RESP_CASCADE_DEPTH = "x-ensemble-cascade-depth"
