"""`minirec demo`: generate the demo mall, train and publish app `demo`, show what it recommends.

The HTTP server joins the demo when the serving issue lands; until then the demo stops after
training and prints where the bundle is and what it recommends to three kinds of users.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

APP = "demo"


def _show(title: str, item_ids: list[str], catalog: pd.DataFrame) -> None:
    rows = catalog.set_index("item_id").loc[item_ids]
    print(f"\n{title}")
    for item_id, row in rows.iterrows():
        print(f"  {item_id:>8}  {row['category']:<12} {row['title']}")


def run_demo(workdir: Path, users: int, items: int, events: int) -> int:
    """Run the demo end to end in `workdir`; returns the exit status."""
    from offline_training.config import TrainConfig
    from offline_training.datafolder import load_data_folder
    from offline_training.report import table
    from offline_training.synth import generate_mall
    from offline_training.train import train
    from recsys import bundle
    from recsys.models import TrainedModels
    from recsys.profiles import profile_keys
    from recsys.recommend import recommend_user, related_items

    data_dir, artifacts = workdir / "data", workdir / "artifacts"
    print(f"1/3 generating the demo mall in {data_dir} …", file=sys.stderr)
    generate_mall(data_dir, users=users, items=items, events=events, seed=7, overwrite=True)
    print("2/3 training app 'demo' …", file=sys.stderr)
    result = train(data_dir, artifacts, APP, config=TrainConfig())
    for report in result.reports:
        if "skipped" not in report:
            print(f"\n{report['protocol']} ({report['n_users']} users, model = {report['model_name']})\n{table(report)}")
    print("\n3/3 what the published model recommends")
    models = TrainedModels.load(bundle.open_current(artifacts, APP))
    data = load_data_folder(data_dir)
    known = models.users.ids[0]
    history = [models.items.ids[i] for i in models.user_items[models.users.get(known)].indices[:5]]
    _show(f"user {known} interacted with", history, models.catalog)
    ranked = recommend_user(models, known, [], 8)
    _show(f"home feed for user {known} (strategy {ranked.strategy})", ranked.item_ids, models.catalog)
    newcomers = data.platform_profiles[~data.platform_profiles["user_id"].isin(models.users.index)]
    if len(newcomers):
        profile = newcomers.iloc[0].to_dict()
        keys = profile_keys(None, profile, TrainConfig().scope_map())
        ranked = recommend_user(models, profile["user_id"], keys, 8)
        _show(f"first visit of {profile['user_id']} with platform profile {keys} (strategy {ranked.strategy})",
              ranked.item_ids, models.catalog)
    anchor = ranked.item_ids[0]
    _show(f"related to {anchor}", related_items(models, anchor, 6).item_ids, models.catalog)
    print(f"\nbundle: {result.path}\nversion: {result.version}\n"
          "(the HTTP API arrives with the serving issue; `minirec models list --artifacts "
          f"{artifacts}` shows the versions)")
    return 0
