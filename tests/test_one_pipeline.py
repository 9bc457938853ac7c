"""What is evaluated is what is served: offline evaluation ranks through the serving pipeline, and the
tuner's fast batch scoring ranks exactly as that pipeline does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from offline_training.datafolder import load_data_folder
from offline_training.evaluate import pipeline_recs, user_states
from offline_training.fit import fit_models
from offline_training.synth import generate_mall
from recsys.config import TrainConfig
from recsys.served import ServedModels
from recsys.topk import blocked_top_k


@pytest.fixture(scope="module")
def mall(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mall") / "data"
    generate_mall(folder, users=500, items=250, events=20_000, seed=11, progress=False)
    return folder


@pytest.mark.parametrize("family", ["als", "ease", "rp3beta", "itemknn"])
def test_pipeline_ranks_known_users_as_the_batch_scores_do(mall, family):
    cfg = TrainConfig()
    cfg.model.family = family
    cfg.als.factors, cfg.hybrid.epochs = 16, 2
    data = load_data_folder(mall)
    models = fit_models(data, cfg, progress=False)
    served = ServedModels.of(models, cfg)
    users = list(models.users.ids[:120])
    states = user_states(data, users)
    served_recs = pipeline_recs(served, users, states, k=10)

    rows = models.users.lookup(users)
    scores = models.known_user_scores(rows).astype(np.float64)
    for r, state in enumerate(states):  # the pipeline's always-on rules: availability and audience
        scores[r, ~served.catalog.state.eligible(state.merchant_profile)] = -np.inf
    batch = blocked_top_k(len(rows), 10, lambda r: scores[r], models.user_items[rows])[0]
    # equal up to ties: same items at every rank where scores differ
    same = (served_recs == batch).mean()
    assert same > 0.99, same
    assert served.models.known.family == family


def test_fold_in_users_are_ranked_from_their_newest_events(mall):
    """A user unknown to the model, with events, is ranked by folding them in (strategy `recent`),
    and never gets those items back."""
    cfg = TrainConfig()
    cfg.model.family = "ease"
    cfg.hybrid.epochs = 2
    data = load_data_folder(mall)
    first_users = set(data.interactions["user_id"].unique()[:50])
    train = data.interactions[~data.interactions["user_id"].isin(first_users)]
    models = fit_models(data, cfg, train, progress=False)
    served = ServedModels.of(models, cfg)
    history = data.interactions[data.interactions["user_id"].isin(first_users)]
    users = sorted(first_users)
    states = user_states(data, users, history)
    recs = pipeline_recs(served, users, states, k=10)
    for r, state in enumerate(states):
        seen = {models.items.index[i] for i, _, _ in state.recent}
        assert not seen & set(recs[r].tolist())
        assert len(state.recent) <= 50
    from recsys.pipeline import score_user
    assert score_user(served, users[0], states[0]).strategy == "recent"
