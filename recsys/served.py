"""A bundle's models as the ranking pipeline sees them, the same offline and in the server."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from recsys.catalog import ServingCatalog
from recsys.config import TrainConfig
from recsys.models import TrainedModels, zscore


@dataclass
class ServedModels:
    """What `recsys.pipeline` ranks with: the models, the catalog (with its live overlay), the event
    weights that fold a user's recent events in, and the consent scopes of profile fields."""

    models: TrainedModels
    catalog: ServingCatalog
    event_weights: dict[str, float]
    scopes: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, models: TrainedModels, cfg: TrainConfig) -> "ServedModels":
        """Wrap freshly trained (or loaded) models with the config they were trained with."""
        return cls(models=models, catalog=ServingCatalog(models, cfg.hybrid.price_bands),
                   event_weights=dict(cfg.events.weights), scopes=cfg.scope_map())

    @functools.cached_property
    def popularity_z(self) -> np.ndarray:
        """The anonymous feed's scores in z units (read-only; the same for every anonymous request)."""
        scores = zscore(self.models.popularity.user_scores([]))
        scores.flags.writeable = False
        return scores
