"""Temporary re-export of vocab/experiments.py, where experiments and request ids now live (below
serving and analytics). Kept only until serving/scene_call.py, serving/routes/search.py and
serving/server_config.py import from vocab.experiments; then this module is deleted. New code
imports vocab.experiments."""

from vocab.experiments import (  # noqa: F401
    DEFAULT,
    HOLDOUT,
    REQUEST_SCENES,
    SCENES,
    STRATEGIES,
    Experiment,
    ExperimentError,
    Variant,
    bucket,
    parse_experiments,
    request_id,
)
