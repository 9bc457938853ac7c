"""A request's scene and the user's experiment variant: the rules, personalization and request_id
that follow from them (vocab/experiments.py parses and buckets), and the cheap path an overloaded
worker takes (serving/overload.py)."""

from __future__ import annotations

import dataclasses

from recsys.rules import SceneRules
from serving.deps import Served
from vocab.experiments import Experiment, Variant, request_id

OVERLOADED_NOTE = "server overloaded: ranked without personalization"


@dataclasses.dataclass(frozen=True)
class SceneCall:
    """One request's scene, its experiment and the user's variant (both None outside any)."""

    scene: str
    experiment: Experiment | None = None
    variant: Variant | None = None
    #: The worker is overloaded: no Redis read, no personalization, no experiment (serving/overload.py).
    overloaded: bool = False

    @property
    def personalized(self) -> bool:
        return not self.overloaded and (self.variant is None or not self.variant.popularity)

    def rules(self, app: Served) -> SceneRules:
        """The scene's rules of this app, with the variant's overrides."""
        rules = app.ctx.config.apps[app.app_id].scenes[self.scene]
        return dataclasses.replace(rules, **dict(self.variant.rules)) if self.variant and self.variant.rules else rules

    def request_id(self, outcome: str | None = None) -> str:
        return request_id(self.scene, self.variant, self.experiment, outcome)

    def fields(self) -> dict[str, str | None]:
        """The response's `experiment` and `variant`."""
        if self.variant is None or self.experiment is None:
            return {"experiment": None, "variant": None}
        return {"experiment": self.experiment.name, "variant": self.variant.name}


def scene_call(app: Served, scene: str, user_id: str | None) -> SceneCall:
    """The user's variant of the app's experiment on `scene`, if there is one."""
    if app.overloaded:
        return SceneCall(scene, overloaded=True)
    experiment = app.ctx.config.apps[app.app_id].experiments.get(scene)
    variant = experiment.assign(user_id) if experiment is not None else None
    return SceneCall(scene, experiment, variant) if variant is not None else SceneCall(scene)
