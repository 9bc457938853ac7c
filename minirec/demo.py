"""`minirec demo`: generate the demo mall, train and publish app `demo`, show what it recommends,
then serve it over HTTP (Ctrl+C stops the server)."""

from __future__ import annotations

import sys
from pathlib import Path

APP = "demo"
#: The demo runs the feedback loop's two headline experiments, so the dashboard and `minirec
#: simulate` have something to measure (half the known users get the popularity feed on purpose).
EXPERIMENTS_TEMPLATE = """
[apps.{app}.experiments.home-feed]
scene = "home"
control = "popularity"
variants.popularity = { share = 0.5, strategy = "popularity" }
variants.personalized = { share = 0.5, strategy = "personalized" }

[apps.{app}.experiments.shading-word]
scene = "shading"
control = "hot"
variants.hot = { share = 0.5, strategy = "popularity" }
variants.personal = { share = 0.5, strategy = "personalized" }
"""


def demo_experiments(app: str) -> str:
    """minirec.toml tables of the demo's experiments for `app` (the tests run them too)."""
    return EXPERIMENTS_TEMPLATE.replace("{app}", app)


def _show(title: str, items: list, strategy: str) -> None:
    print(f"\n{title} (strategy {strategy})")
    for item in items:
        print(f"  {item.item_id:>8}  {item.category:<12} {item.title}   — {item.reason}")


def run_demo(workdir: Path, users: int, items: int, events: int, port: int = 8000,
             api_key: str = "demo-key-change-me", serve: bool = True) -> int:
    """Run the demo end to end in `workdir`; returns the exit status."""
    import numpy as np

    from offline_training.datafolder import load_data_folder
    from offline_training.report import table
    from offline_training.synth import generate_mall
    from offline_training.train import train
    from offline_training.evaluate import user_states
    from recsys import bundle
    from recsys.config import TrainConfig, config_from_dict
    from recsys.models import TrainedModels
    from recsys.recommend import buy_again_shelf, home_feed, related_shelf
    from recsys.rules import DEFAULTS
    from recsys.served import ServedModels

    data_dir, artifacts = workdir / "data", workdir / "artifacts"
    if len(api_key) < 16:
        raise ValueError("--api-key must be at least 16 characters")
    base = f"http://127.0.0.1:{port}"
    if serve:
        print(f"minirec demo: the storefront will be at {base}/demo and the dashboard at {base}/dashboard "
              "once the mall is trained (about two minutes)", file=sys.stderr, flush=True)
    print(f"1/4 generating the demo mall in {data_dir} …", file=sys.stderr)
    generate_mall(data_dir, users=users, items=items, events=events, seed=7, overwrite=True)
    print("2/4 tuning and training app 'demo' …", file=sys.stderr)
    result = train(data_dir, artifacts, APP, config=TrainConfig(), force=True)
    known = result.tuning.known
    if known is not None:
        print(f"\ntuning: {len(known.trials)} trials in {known.seconds:.0f} s; winner {known.family} "
              f"(validation NDCG@{known.k} {known.value:.4f} vs popularity {known.popularity:.4f})")
    for report in result.reports:
        if "skipped" not in report:
            print(f"\n{report['protocol']} ({report['n_users']} users, model = {report['model_name']})\n"
                  f"{table(report)}")
    print("\n3/4 what the published model serves (the same pipeline as the API, default scene rules)")
    loaded = bundle.open_current(artifacts, APP)
    models = TrainedModels.load(loaded)
    served = ServedModels.of(models, config_from_dict(loaded.manifest["config"]))
    data = load_data_folder(data_dir)
    buyers = np.flatnonzero(np.diff(models.repeat.counts.indptr)) if models.repeat is not None else []
    known_user = models.users.ids[int(buyers[0]) if len(buyers) else 0]  # one with purchases: buy again shows
    history = data.interactions[data.interactions["user_id"] == known_user]["item_id"].unique()[:5]
    print(f"\nuser {known_user} interacted with: "
          + ", ".join(models.catalog.set_index("item_id").loc[list(history), "title"]))
    state = user_states(data, [known_user])[0]
    page = home_feed(served, known_user, state, DEFAULTS["home"], n=8)
    _show(f"home feed for user {known_user}", page.items, page.strategy)
    again = buy_again_shelf(served, known_user, state, DEFAULTS["buy-again"], n=5)
    _show(f"buy again for user {known_user}", again.items, again.strategy + (f"; {again.note}" if again.note else ""))
    newcomers = data.platform_profiles[~data.platform_profiles["user_id"].isin(models.users.index)]
    if len(newcomers):
        newcomer = str(newcomers.iloc[0]["user_id"])
        page = home_feed(served, newcomer, user_states(data, [newcomer])[0], DEFAULTS["home"], n=8)
        _show(f"first visit of {newcomer}, known only by their platform profile", page.items, page.strategy)
    anchor = page.items[0].item_id
    related = related_shelf(served, anchor, None, None, DEFAULTS["related"], n=6)
    _show(f"related to {anchor}", related.items, related.strategy)
    print(f"\nbundle: {result.path}\nversion: {result.version}")
    if not serve:
        return 0
    from minirec.server import run_server
    from serving.server_config import new_key, write_server_config
    config = workdir / "minirec.toml"
    admin_key = new_key()
    write_server_config(config, {APP: api_key}, admin_key, new_key(), artifacts="artifacts", seed_data={APP: "data"})
    with open(config, "a", encoding="utf-8") as out:
        out.write(demo_experiments(APP))
    newcomer_param = f"&newcomer={newcomer}" if len(newcomers) else ""
    print(f"""
4/4 serving app 'demo' at {base} (Ctrl+C to stop); API docs at {base}/docs
  storefront: {base}/demo?app={APP}&key={api_key}&known={known_user}{newcomer_param}
  dashboard:  {base}/dashboard?app={APP}&key={api_key}
  experiments (minirec.toml): home-feed (popularity vs personalized), shading-word (hot vs personal)
  simulated users: minirec simulate --base {base} --app {APP} --api-key {api_key} --data {data_dir} --json sim.json
  curl -H 'X-API-Key: {api_key}' '{base}/v1/apps/demo/recommend/home?user_id={known_user}&n=5'
  curl -H 'X-API-Key: {api_key}' '{base}/v1/apps/demo/recommend/related/{anchor}?n=5'
  curl -H 'X-API-Key: {api_key}' '{base}/v1/apps/demo/recommend/buy-again?user_id={known_user}&n=5'
  curl -H 'X-API-Key: {api_key}' -H 'Content-Type: application/json' -X POST {base}/v1/apps/demo/events \\
       -d '{{"events": [{{"event_id": "e1", "user_id": "{known_user}", "type": "purchase", "item_id": "{anchor}"}}]}}'
  admin key (GET {base}/v1/admin/models): {admin_key}
""", flush=True)
    return run_server(config, "127.0.0.1", port)
