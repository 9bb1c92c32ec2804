"""What ``GET /v1/models`` lists through the gateway: what a client may name (pure).

The default model (what a request that is not ensembled goes to), the members an
ensemble may name in ``x-ensemble-models``, and the profiles a client selects with
``"model": "<profile>"``, each marked with ``ensemble_kind``. Names only: never an
endpoint's URL, key or upstream model name.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..config import Config
from ..config.demo import DEMO_OWNER
from .wire import Model

OWNER = "ensemble-extproc"


def catalog(config: Config) -> list[Model]:
    """The default model first, then the other members in config order, then profiles.
    With ensembles off (``ensemble.enabled: false``) only the default model can be named."""
    return list(_entries(config))


def _entries(config: Config) -> Iterator[Model]:
    default = config.endpoints[config.default_model]
    yield Model(
        id=default.name,
        created=0,
        owned_by=DEMO_OWNER if default.demo else OWNER,
        ensemble_kind="default",
    )
    if not config.ensemble.enabled:
        return
    for name, endpoint in config.endpoints.items():
        if name != config.default_model:
            owner = DEMO_OWNER if endpoint.demo else OWNER
            yield Model(id=name, created=0, owned_by=owner, ensemble_kind="member")
    for name, spec in config.profiles.items():
        yield Model(
            id=name,
            created=0,
            owned_by=OWNER,
            ensemble_kind="profile",
            ensemble_strategy=spec.strategy,
            ensemble_models=list(spec.models),
        )


def find(config: Config, model_id: str) -> Model | None:
    return next((model for model in _entries(config) if model.id == model_id), None)
