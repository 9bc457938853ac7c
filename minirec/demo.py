"""`minirec demo`: generate the demo mall, train and publish app `demo`, show what it recommends,
then serve it over HTTP (Ctrl+C stops the server)."""

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


def run_demo(workdir: Path, users: int, items: int, events: int, port: int = 8000,
             api_key: str = "demo-key-change-me", serve: bool = True) -> int:
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
    if len(api_key) < 16:
        raise ValueError("--api-key must be at least 16 characters")
    print(f"1/4 generating the demo mall in {data_dir} …", file=sys.stderr)
    generate_mall(data_dir, users=users, items=items, events=events, seed=7, overwrite=True)
    print("2/4 training app 'demo' …", file=sys.stderr)
    result = train(data_dir, artifacts, APP, config=TrainConfig())
    for report in result.reports:
        if "skipped" not in report:
            print(f"\n{report['protocol']} ({report['n_users']} users, model = {report['model_name']})\n{table(report)}")
    print("\n3/4 what the published model recommends")
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
    print(f"\nbundle: {result.path}\nversion: {result.version}")
    if not serve:
        return 0
    from minirec.server import run_server
    from serving.tenancy import new_key, write_server_config
    config = workdir / "minirec.toml"
    admin_key = new_key()
    write_server_config(config, {APP: api_key}, admin_key, new_key(), artifacts="artifacts", seed_data={APP: "data"})
    base = f"http://127.0.0.1:{port}"
    print(f"""
4/4 serving app 'demo' at {base} (Ctrl+C to stop); API docs at {base}/docs
  curl -H 'X-API-Key: {api_key}' '{base}/v1/apps/demo/recommend/home?user_id={known}&n=5'
  curl -H 'X-API-Key: {api_key}' '{base}/v1/apps/demo/recommend/related/{anchor}?n=5'
  curl -H 'X-API-Key: {api_key}' -H 'Content-Type: application/json' -X POST {base}/v1/apps/demo/events \\
       -d '{{"events": [{{"event_id": "e1", "user_id": "{known}", "type": "purchase", "item_id": "{anchor}"}}]}}'
  admin key (GET {base}/v1/admin/models): {admin_key}
""", flush=True)
    return run_server(config, "127.0.0.1", port)
