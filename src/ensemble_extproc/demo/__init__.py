"""Demo model backends: canned OpenAI-compatible servers, clearly labelled as demo.

They make the gateway usable without a real LLM and serve as model endpoints in tests.
The models' config (the ``demo.models`` section) is declared in ``config.demo``; the
servers (aiohttp) are ``demo.server``, imported only by what serves or tests them.
"""
