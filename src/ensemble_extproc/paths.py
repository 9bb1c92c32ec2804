"""The OpenAI API paths the gateway serves; Envoy answers every other one with a JSON 404.

Shared by the rendered Envoy routes, the processor (only a chat completion can become an
ensemble) and the docs.
"""

from __future__ import annotations

CHAT_COMPLETIONS = "/v1/chat/completions"
MODELS = "/v1/models"
# GET /v1/models and GET /v1/models/{model}: the gateway's list (upstream/discovery.py).
# A model's id may hold slashes (org/model).
MODELS_REGEX = r"^/v1/models(/.+)?$"
# The methods each served path allows (a 405 with ``Allow`` for the others).
CHAT_METHOD = "POST"
MODELS_METHOD = "GET"


def is_chat_completion(method: str, path: str) -> bool:
    """The one request an ensemble can answer: ``POST /v1/chat/completions`` (any query)."""
    return method == CHAT_METHOD and path.partition("?")[0] == CHAT_COMPLETIONS
