"""The `minirec` command line: data, train, evaluate, models, serve, keys, bench, demo.

Results go to stdout (a version, a table, JSON); progress and logs go to stderr, so scripts can
capture the result. Errors in the input print one clear message and exit with status 2
(set MINIREC_DEBUG=1 to see the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

DEFAULT_ARTIFACTS = os.environ.get("MINIREC_ARTIFACTS", "artifacts")


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate, import, validate data folders",
                          description="Create and check data folders in the minirec contract (see `minirec data schema`).")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = dsub.add_parser("synth", help="generate a synthetic mini-program mall with known ground truth",
                            description="Generate a realistic Chinese mini-program mall: catalog, users with latent "
                                        "interests, platform and merchant profiles, events, search log, ground truth.")
    synth.add_argument("--out", required=True, help="folder to write (must be empty or absent)")
    synth.add_argument("--users", type=int, default=5000, help="number of users (default 5000)")
    synth.add_argument("--items", type=int, default=2000, help="number of items (default 2000)")
    synth.add_argument("--events", type=int, default=200_000, help="approximate number of events (default 200000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data (default 0)")
    synth.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sp = dsub.add_parser("synth-platform", help="generate a synthetic platform: several malls sharing users",
                         description="Write profiles (with consent scopes, `marketing` included), every mall's "
                                     "events, the users' true interests and the malls as Parquet files "
                                     "(offline_training/synth_platform.py).")
    sp.add_argument("--out", required=True, help="folder to write the Parquet files into")
    sp.add_argument("--users", type=int, default=20_000, help="number of platform users (default 20000)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    imp = dsub.add_parser("import", help="convert a public data set into a data folder",
                          description="Convert a public data set into the minirec data folder contract.")
    isub = imp.add_subparsers(dest="source", required=True, metavar="SOURCE")
    folder = "folder of the source data set"
    for name, what, more, where in (
            ("movielens", "MovieLens 100K layout (u.data, u.user, u.item)", "", folder),
            ("amazon-unisrec", "Amazon 2018 in UniSRec preprocessing (*.text, *.inter, *2index)", "", folder),
            ("tafeng", "Ta-Feng grocery purchase log (ta_feng_all_months_merged.csv.zip): one purchase per "
                       "customer, product and day; AGE_GROUP, PIN_CODE as merchant profile",
             " Each customer's lines of one product on one day become one `purchase` event (value = the "
             "summed AMOUNT, ts = that day 00:00 in Taiwan, UTC+8); every product becomes an item (title "
             "`商品 <PRODUCT_ID>`, as the data set has no names; category = PRODUCT_SUBCLASS; price = median "
             "SALES_PRICE/AMOUNT); AGE_GROUP and PIN_CODE become the merchant profile columns age_group and "
             "area. No platform profiles.",
             "the .csv.zip, the folder holding it, or the unzipped .csv")):
        p = isub.add_parser(name, help=what, description=f"Import the {what}.{more}")
        p.add_argument("path", help=where)
        p.add_argument("--out", required=True, help="data folder to write")
        p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    val = dsub.add_parser("validate", help="check a data folder against the contract",
                          description="Validate a data folder; lists every problem with file, row and column.")
    val.add_argument("dir", help="data folder")
    val.add_argument("--platform", help="folder with the shared platform_profiles (default: the data folder)")
    val.add_argument("--config", help="config file (its [platform.scopes] decide which platform columns are known)")

    exp = dsub.add_parser("export-events", help="turn the server's event log into a data folder (feedback loop)",
                          description="Export an app's logged events (POST events) as interactions and queries; "
                                      "with --base, the result is a complete data folder (base + new events) to "
                                      "train on.")
    exp.add_argument("--log", required=True, help="the server's event log folder (<state_dir>/events), or the "
                                                  "nats://host:port of its event stream ([server] event_stream)")
    exp.add_argument("--stream", default="MINIREC_EVENTS",
                     help="JetStream stream name when --log is a nats:// URL (default MINIREC_EVENTS)")
    exp.add_argument("--app", required=True, help="app id")
    exp.add_argument("--out", required=True, help="data folder to write")
    exp.add_argument("--base", help="an existing data folder to extend with the logged events")
    exp.add_argument("--since", type=float, help="only events at or after this Unix time")
    exp.add_argument("--platform", help="folder with the shared platform_profiles (for validating --base)")
    exp.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    dsub.add_parser("schema", help="print the data folder contract (tables and columns)",
                    description="Print the data folder contract as Markdown.")


def _add_train_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="tune, evaluate and train on a data folder; write and publish a bundle",
                           description="Validate the data folder; choose the known-user model (ALS, EASE, RP3beta, "
                                       "item kNN) and its settings, and the first-visit blend, by a time-boxed search on "
                                       "a validation split of the training data ([tuning] in the config); evaluate "
                                       "(protocols from the config); train every model on all data; write "
                                       "ARTIFACTS/APP/VERSION/. The bundle is published only if it beats popularity and "
                                       "is not worse than the published version on the same validation split (the "
                                       "publish gate); otherwise it is kept unpublished, the reason is printed and the "
                                       "exit status is 3. Prints the new version on stdout.")
    train.add_argument("--data", help="the app's data folder (required)")
    train.add_argument("--out", default=DEFAULT_ARTIFACTS, help=f"artifacts folder (default {DEFAULT_ARTIFACTS!r}, "
                                                                 "or $MINIREC_ARTIFACTS)")
    train.add_argument("--app", help="app id: letters, digits, '_' or '-' (required)")
    train.add_argument("--config", help="TOML config overriding the defaults (see `minirec train --print-config`)")
    train.add_argument("--platform", help="folder with the shared platform_profiles (default: the data folder)")
    train.add_argument("--no-publish", action="store_true", help="write the bundle but leave `current` where it is")
    train.add_argument("--force", action="store_true", help="publish even if the publish gate fails")
    train.add_argument("--no-tune", action="store_true",
                       help="train the config as written, without searching models and settings")
    train.add_argument("--no-eval", action="store_true",
                       help="skip the evaluation protocols (faster; tuning then validates on all data)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or logs")
    train.add_argument("--print-config", action="store_true", help="print the default config as TOML and exit")

    ev = sub.add_parser("evaluate", help="evaluate the models with an offline protocol",
                        description="Split the data by a protocol; tune on the training side (unless --no-tune), "
                                    "train on it, rank the other side through the serving pipeline, and compare with "
                                    "popularity on the same users. Prints a table; --json writes the report (with "
                                    "every tuning trial).")
    ev.add_argument("--data", required=True, help="the app's data folder")
    ev.add_argument("--protocol", required=True,
                    choices=["temporal", "stratified", "last-out", "cold-users", "cold-items", "fold-in"],
                    help="temporal: train before a cut in time (--cut), test what users did after it: known users "
                         "on everything (repeats too) and on items new to them, first visits from their profile, "
                         "each beside best sellers and 'buy again'; stratified: per-user random 75/25; "
                         "last-out: each user's latest item; cold-users: 20%% of "
                         "users held out (profile only); cold-items: 20%% of items held out (content only); "
                         "fold-in: 20%% of users left out of training, 75%% of their items folded in as serving "
                         "does with recent events")
    ev.add_argument("--cut", help="temporal: the cut, a date (2001-02-01, UTC) or Unix seconds (default: "
                                   "evaluate.test_days before the newest event)")
    ev.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics (default 10)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    ev.add_argument("--json", help="write the report as JSON to this file")
    ev.add_argument("--report", help="also write a Markdown report (and a PNG chart beside it) to this file")
    ev.add_argument("--config", help="TOML config overriding the defaults")
    ev.add_argument("--no-tune", action="store_true", help="evaluate the config as written, without tuning")
    ev.add_argument("--platform", help="folder with the shared platform_profiles (default: the data folder)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train_all_command(sub: argparse._SubParsersAction) -> None:
    ta = sub.add_parser(
        "train-all", help="train every app whose data changed, in parallel on Ray; a summary table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
                    "Train every app whose data folder changed since its published bundle (its fingerprint "
                    "differs from the one in the bundle's manifest; --force: all), each as a Ray task with its "
                    "own CPU, memory and time limits, through the same tuning, evaluation, publish gate and "
                    "atomic publish as `minirec train`. One app failing, running out of time or of memory "
                    "never stops the others and never leaves a half-written bundle; a summary table follows "
                    "(stdout; --json writes it). Exit status 1 if any app failed (the table is printed "
                    "anyway), else 0; an app held by the publish gate is not a failure.", 100),
        epilog="""where apps come from:
  --apps-root DIR        every DIR/<app>/data/ is an app's data folder (the layout a service provider
                         keeps, one folder per merchant); DIR/<app>/train.toml, if present, is its
                         training config, DIR/<app>/limits.toml may set timeout_seconds, memory_mb, cpus
  --server-config FILE   minirec.toml: its apps with seed_data (unless --apps-root is given), its
                         artifacts folder, and its event log (state_dir/events or event_stream) for
                         --from-events

examples:
  minirec train-all --apps-root /srv/minirec/apps --artifacts /srv/minirec/artifacts
  minirec train-all --server-config minirec.toml --apps-root /srv/minirec/apps --from-events
  minirec train-all --apps-root apps --address ray://head:10001 --memory-mb 8192 --json summary.json""")
    ta.add_argument("--apps-root", metavar="DIR", help="folder of apps: DIR/<app>/data is each app's data folder")
    ta.add_argument("--server-config", metavar="FILE",
                    help="minirec.toml: apps with seed_data, the artifacts folder and the event log")
    ta.add_argument("--artifacts", help=f"artifacts folder, one subfolder per app (default: the server config's, "
                                        f"else {DEFAULT_ARTIFACTS!r} or $MINIREC_ARTIFACTS)")
    ta.add_argument("--apps", nargs="+", metavar="APP", help="only these apps")
    ta.add_argument("--config", help="training config of apps without their own train.toml")
    ta.add_argument("--platform", help="folder with the shared platform_profiles (default: each data folder)")
    ta.add_argument("--force", action="store_true", help="train every app, changed or not")
    ta.add_argument("--from-events", action="store_true",
                    help="first merge each app's new logged events (POST events) into its data folder's "
                         "interactions and queries, once per event_id (a ledger <data>.events-merged.json "
                         "beside the folder remembers what was merged)")
    ta.add_argument("--events", metavar="LOG", help="the event log for --from-events: the server's log folder "
                                                    "(<state_dir>/events) or nats://host:port (default: from "
                                                    "--server-config)")
    ta.add_argument("--stream", help="JetStream stream name (default: the server config's, else MINIREC_EVENTS)")
    ta.add_argument("--address", help="Ray cluster to run on (ray://head:10001 or auto); default: start Ray on "
                                      "this machine")
    ta.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    ta.add_argument("--cpus-per-app", type=float, default=1.0, help="CPUs each app's task asks for (default 1)")
    ta.add_argument("--memory-mb", type=int, default=4096,
                    help="memory each app's task asks for and may use (RSS); over it the training is stopped "
                         "(default 4096)")
    ta.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds each app may train; then it is stopped, or killed (default 3600)")
    ta.add_argument("--no-eval", action="store_true", help="skip the evaluation protocols (faster)")
    ta.add_argument("--json", metavar="PATH", help="also write the summary table as JSON")
    ta.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, verify, publish and roll back model versions",
                            description="Manage the versioned bundles in the artifacts folder.")
    models.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, help=f"artifacts folder (default {DEFAULT_ARTIFACTS!r})")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    ls = msub.add_parser("list", help="versions per app, the published one marked with *")
    ls.add_argument("app", nargs="?", help="only this app")
    pub = msub.add_parser("publish", help="verify a version and make it the current one")
    pub.add_argument("app")
    pub.add_argument("version")
    rb = msub.add_parser("rollback", help="publish the newest valid version older than the current one")
    rb.add_argument("app")
    ver = msub.add_parser("verify", help="check a version's files against their sha256 (default: current)")
    ver.add_argument("app")
    ver.add_argument("version", nargs="?")


def _add_serve_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API",
                           description="Serve every app of minirec.toml: loads published bundles (and picks up new "
                                       "ones without a restart), uses REDIS_URL or an embedded Redis. OpenAPI docs at "
                                       "/docs.")
    serve.add_argument("--config", default=os.environ.get("MINIREC_CONFIG", "minirec.toml"),
                       help="server config (default minirec.toml or $MINIREC_CONFIG)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    serve.add_argument("--init", metavar="APP", nargs="+",
                       help="write a new --config for these apps with fresh API keys (printed once) and exit")
    serve.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, help="artifacts folder written by --init")

    keys = sub.add_parser("keys", help="make an API key and its sha256 for minirec.toml",
                          description="Print a fresh random API key and the sha256 to put in minirec.toml.")
    keys.add_argument("action", choices=["new"], help="new: a fresh key")

    db = sub.add_parser("db", help="the app store's database: apply its migrations, show its state",
                        description="The app store (apps and keys created through the admin API) lives in SQLite "
                                    "in the server's state_dir, or in [server] database_url (PostgreSQL). The "
                                    "server applies the migrations at start; `db upgrade` applies them "
                                    "beforehand (a deployment step, or a database the servers may not change).")
    db.add_argument("action", choices=["upgrade", "status"],
                    help="upgrade: apply the migrations not applied yet; status: schema revision, apps, "
                         "change counter")
    db.add_argument("--config", default=os.environ.get("MINIREC_CONFIG", "minirec.toml"),
                    help="server config naming the database (default minirec.toml or $MINIREC_CONFIG)")


def _add_bench_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (side by side with reference implementations)",
                           description="Benchmarks that compare our code with a reference in one run; they report "
                                       "ratios and medians because these machines are shared and noisy.")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    search = bsub.add_parser("search", help="BM25: ours vs rank-bm25 vs bm25s; relevance on QBQTC and Cranfield",
                             description="Build our index, rank-bm25 and bm25s over the same tokens; measure "
                                         "single-thread queries/s and p50/p99 on a synthetic Chinese catalog and the "
                                         "Amazon titles; check identical top-10; MRR@10/Recall@10 on QBQTC and "
                                         "nDCG@10/MAP on Cranfield.")
    search.add_argument("--json", help="write the results to this file")
    search.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding amazon-scientific, qbqtc and cranfield (default ../shared/data)")
    search.add_argument("--items", type=int, default=100_000, help="synthetic catalog size (default 100000)")
    search.add_argument("--queries", type=int, default=1000, help="queries per corpus (default 1000)")
    search.add_argument("--reference-queries", type=int, default=None,
                        help="how many of the queries rank-bm25 answers (default: all; it is slow)")
    serve = bsub.add_parser("serve", help="home, suggest, search and events under load beside a bare endpoint; "
                                          "event-to-feed delay",
                            description="Start the server twice the same way on a synthetic 20k-item mall and drive "
                                        "it from this machine: peak requests/s (closed loop) and p50/p99 at half of "
                                        "each endpoint's peak (open loop) for GET /healthz, recommend/home (known, "
                                        "first-visit and unknown users), search/suggest (typed prefixes of logged "
                                        "queries) and search (logged queries as typed, in pinyin, initials, with "
                                        "homophones and typos), each search phase beside /healthz at the same rate; "
                                        "then the delay from an event to a changed feed, and "
                                        "POST events (one new event per request).")
    from bench import serve_bench
    serve_bench.add_arguments(serve)
    capacity = bsub.add_parser("capacity", help="highest rate per route within a p99 budget; report and sizing rule",
                               description="For bare /healthz, home (full and degraded), related, search, suggest "
                                           "and events: saturation throughput, then open-loop rates rising to it; "
                                           "the highest rate whose p99 stays within the budget. Writes a Markdown "
                                           "report with a latency-vs-throughput plot and the cores and replicas "
                                           "for 5,000 QPS of the traffic mix.")
    from bench import capacity as capacity_bench
    capacity_bench.add_arguments(capacity)
    profile = bsub.add_parser("profile", help="where a request's server CPU goes, by layer (py-spy)",
                              description="Drive one endpoint of the serving bench's server at its peak and sample "
                                          "the server with py-spy: the share and CPU ms per request of our models "
                                          "and rules, our route code, the Redis client, FastAPI/Starlette/pydantic "
                                          "and uvicorn/asyncio. Needs py-spy (dev extra) and ptrace permission.")
    from bench import profile_serve
    profile_serve.add_arguments(profile)
    relevance = bsub.add_parser("relevance", help="search relevance through GET search: QBQTC, the mall's "
                                                  "held-out searches, their pinyin and typo variants",
                                description="Train QBQTC's titles and a synthetic mall into bundles, serve them and "
                                            "measure GET search over HTTP: MRR@10 on QBQTC dev; MRR@10 of the clicked "
                                            "item on the newest 20%% of the mall's search log (trained on the older "
                                            "80%%), anonymous and personalized, beside plain BM25 over words; the "
                                            "same searches typed in pinyin, initials, with homophones and typos.")
    from bench import search_relevance
    search_relevance.add_arguments(relevance)
    apps = bsub.add_parser("apps", help="N copies of the demo bundle in one server: ready time, RSS per worker, "
                                        "warm and evicted-app p99",
                           description="Copy the demo-size bundle as N apps (1, 100, 1000), serve each set with 2 "
                                       "workers and a memory budget, and measure time to ready, RSS per worker, warm "
                                       "home p99 against the single-app server and the first request to an evicted app.")
    from bench import apps_bench
    apps_bench.add_arguments(apps)
    audiences = bsub.add_parser("audiences", help="lookalike precision@N vs random and most-active users on a "
                                                  "synthetic platform",
                                description="Generate a platform of malls sharing users with known interests, build a "
                                            "lookalike audience per focused mall from its buyers, and compare its "
                                            "precision@N against ground truth with N random and N most active users "
                                            "of the same pool.")
    from bench import audience_bench
    audience_bench.add_arguments(audiences)


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="generate the demo mall, train it and show what it recommends",
                          description="End-to-end demo: generate a synthetic mall, train and publish the app `demo`, "
                                      "and print its evaluation and example recommendations.")
    demo.add_argument("--port", type=int, default=8000, help="port of the demo server (default 8000)")
    demo.add_argument("--workdir", default="demo-work", help="folder for the demo's data and artifacts (default demo-work)")
    demo.add_argument("--api-key", default="demo-key-change-me", help="API key of the demo app (at least 16 characters)")
    demo.add_argument("--no-serve", action="store_true", help="stop after training (do not start the server)")
    demo.add_argument("--users", type=int, default=3000, help="users in the demo mall (default 3000)")
    demo.add_argument("--items", type=int, default=1500, help="items in the demo mall (default 1500)")
    demo.add_argument("--events", type=int, default=150_000, help="events in the demo mall (default 150000)")


def _add_feedback_commands(sub: argparse._SubParsersAction) -> None:
    from minirec import report, simulate
    rep = sub.add_parser("report", help="experiments, CTR, GMV and search by scene and variant from the event log",
                         description="Analytics of one app from its durable event log (DuckDB): per scene and "
                                     "variant users, impressions, CTR, conversion, GMV per user, search PV, each "
                                     "with a 95% interval, and lifts against each experiment's control. "
                                     "See docs/experiments.md.")
    report.add_arguments(rep)
    sim = sub.add_parser("simulate", help="drive a running server with simulated mall users and measure the lifts",
                         description="Simulated users of the synthetic mall browse, search, click and buy through "
                                     "the HTTP API by their ground-truth interests, among what the service shows "
                                     "them; then the server's analytics give each experiment's lifts.")
    simulate.add_arguments(sim)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minirec", description="Recommendation and search for merchants' mini-programs: data, training, "
                                    "evaluation, model versions and the HTTP API.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    _add_train_commands(sub)
    _add_train_all_command(sub)
    _add_model_commands(sub)
    _add_serve_commands(sub)
    _add_bench_commands(sub)
    _add_demo_command(sub)
    _add_feedback_commands(sub)
    return parser


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from offline_training.synth import generate_mall
        _print_json(generate_mall(args.out, users=args.users, items=args.items, events=args.events,
                                  seed=args.seed, overwrite=args.overwrite))
    elif args.data_command == "synth-platform":
        from offline_training.synth_platform import generate_platform, write_platform
        _print_json(write_platform(generate_platform(args.users, seed=args.seed), args.out))
    elif args.data_command == "import":
        from offline_training import importers
        fn = {"movielens": importers.import_movielens, "amazon-unisrec": importers.import_amazon_unisrec,
              "tafeng": importers.import_tafeng}[args.source]
        _print_json(fn(args.path, args.out, overwrite=args.overwrite))
    elif args.data_command == "export-events":
        from offline_training.export import export_events
        result = export_events(args.log, args.app, args.out, since=args.since, base=args.base,
                               platform_dir=args.platform, overwrite=args.overwrite, stream=args.stream)
        _print_json({k: str(v) if isinstance(v, Path) else v for k, v in vars(result).items()})
    elif args.data_command == "validate":
        from recsys.config import load_config
        from offline_training.datafolder import load_data_folder
        data = load_data_folder(args.dir, args.platform, load_config(args.config).scope_map())
        print(f"ok: {len(data.items)} items, {len(data.interactions)} interactions, "
              f"{len(data.merchant_profiles)} merchant profiles, {len(data.platform_profiles)} platform profiles, "
              f"{0 if data.queries is None else len(data.queries)} queries")
    else:
        from recsys.schema import schema_markdown
        print(schema_markdown())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from recsys.config import defaults_toml
    if args.print_config:
        print(defaults_toml())
        return 0
    if not args.data or not args.app:
        raise ValueError("--data and --app are required (see `minirec train --help`)")
    from offline_training.train import train
    result = train(args.data, args.out, args.app, config=args.config, platform_dir=args.platform,
                   publish=not args.no_publish, run_evaluation=not args.no_eval, progress=not args.quiet,
                   tuning=False if args.no_tune else None, force=args.force)
    if not args.quiet:
        from offline_training.report import table
        known = result.tuning.known
        if known is not None:
            print(f"\ntuning: {len(known.trials)} trials in {known.seconds:.0f} s; winner {known.family} "
                  f"(validation NDCG@{known.k} {known.value:.4f}, popularity {known.popularity:.4f})", file=sys.stderr)
        repeat = result.tuning.repeat
        if repeat is not None:
            print(f"repeat purchases: {repeat.stats['repeat_rate']:.1%} of purchased pairs rebought; home-feed mix "
                  f"{repeat.settings['mix_weight']:g} (validation NDCG@{known.k if known else 10}: home {repeat.home:.4f}, "
                  f"buy again {repeat.buy_again:.4f}, best sellers {repeat.best_sellers:.4f})", file=sys.stderr)
        for reason in result.tuning.skipped:
            print(f"tuning: {reason}", file=sys.stderr)
        for report in result.reports:
            if "skipped" in report:
                print(f"\n{report['protocol']}: skipped ({report['skipped']})", file=sys.stderr)
            else:
                print(f"\n{report['protocol']} ({report['n_users']} users, {report['model_name']})\n{table(report)}",
                      file=sys.stderr)
                if "groups" in report:
                    from offline_training.report import groups_table
                    print(groups_table(report), file=sys.stderr)
        state = "published" if result.published else "written (not published)"
        print(f"\nbundle {state}: {result.path}  ({result.seconds:.1f} s, peak {result.peak_rss_mb:.0f} MB)",
              file=sys.stderr)
    gate = result.gate
    if gate is not None:
        for reason in gate.reasons:
            print(f"publish gate: {reason}", file=sys.stderr)
    print(result.version)
    if gate is not None and not gate.passed:
        if result.published:
            print("publish gate failed; published anyway (--force)", file=sys.stderr)
            return 0
        print(f"minirec train: not published (publish gate failed); publish it anyway with "
              f"`minirec models --artifacts {args.out} publish {args.app} {result.version}`", file=sys.stderr)
        return 3
    return 0


def _cmd_train_all(args: argparse.Namespace) -> int:
    from offline_training import train_all as ta
    if not args.apps_root and not args.server_config:
        raise ValueError("give --apps-root DIR and/or --server-config minirec.toml (see `minirec train-all --help`)")
    for name, value in (("--cpus", args.cpus), ("--cpus-per-app", args.cpus_per_app),
                        ("--memory-mb", args.memory_mb), ("--timeout", args.timeout)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0")
    limits = {"timeout_s": args.timeout, "memory_mb": args.memory_mb, "num_cpus": args.cpus_per_app}
    artifacts, events, stream = args.artifacts, args.events, args.stream
    jobs: list[ta.AppJob] = []
    if args.server_config:  # read here: training does not import serving (docs/architecture.md)
        from serving.server_config import load_server_config
        server = load_server_config(args.server_config)
        artifacts = artifacts or str(server.artifacts)
        events = events or server.event_stream or str(server.state_dir / "events")
        stream = stream or server.event_stream_name
        if not args.apps_root:
            jobs = [ta.AppJob(a.app_id, a.seed_data, Path(args.config) if args.config else None, **limits)
                    for a in server.apps.values() if a.seed_data is not None]
    if args.apps_root:
        jobs = ta.discover_apps(args.apps_root, config=args.config, **limits)
    if args.apps:
        unknown = sorted(set(args.apps) - {j.app for j in jobs})
        if unknown:
            raise ValueError(f"unknown apps {unknown} (known: {', '.join(j.app for j in jobs) or 'none'})")
        jobs = [j for j in jobs if j.app in args.apps]
    if args.from_events and not events:
        raise ValueError("--from-events needs --events LOG (or --server-config naming the event log)")
    rows = ta.run_train_all(jobs, artifacts or DEFAULT_ARTIFACTS, platform_dir=args.platform, force=args.force,
                            events_source=events if args.from_events else None,
                            stream=stream or "MINIREC_EVENTS", run_evaluation=not args.no_eval,
                            address=args.address, cpus=args.cpus, progress=not args.quiet)
    print(ta.format_table(rows))
    if args.json:
        ta.write_json(rows, args.json)
    return ta.exit_status(rows)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from offline_training import report as report_mod
    from recsys.config import load_config
    from offline_training.datafolder import load_data_folder
    from offline_training.evaluate import evaluate
    if args.k < 1:
        raise ValueError("--k must be at least 1")
    cfg = load_config(args.config)
    if args.cut:
        from recsys.config import parse_cut
        parse_cut(args.cut)  # a clear error before the data is read
        cfg.evaluate.temporal_cut = args.cut
    data = load_data_folder(args.data, args.platform, cfg.scope_map())
    result = evaluate(data, cfg, args.protocol, k=args.k, seed=args.seed, progress=not args.quiet,
                      tuning=False if args.no_tune else None)
    known = (result["tuning"] or {}).get("known")
    if known:
        print(f"tuned on the training side: {len(known['trials'])} trials, winner {known['family']} "
              f"(validation NDCG@{known['k']} {known['value']:.4f})", file=sys.stderr)
    print(f"{args.protocol}: {result['n_users']} users, model = {result['model_name']}, "
          f"baseline = {result['baseline_name']}\n{report_mod.table(result)}")
    if "groups" in result:
        print(report_mod.groups_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.report:
        report_path = Path(args.report)
        full = {"protocols": [result], "tuning": result["tuning"]}
        report_path.write_text(report_mod.markdown(full, f"evaluation of {args.data}"), encoding="utf-8")
        report_path.with_name("report.png").write_bytes(report_mod.chart(full))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from recsys import bundle
    if args.models_command == "list":
        names = [args.app] if args.app else bundle.apps(args.artifacts)
        if not names:
            print(f"no models in {args.artifacts}")
        for app in names:
            current = bundle.current_version(args.artifacts, app)
            print(app)
            for version in bundle.versions(args.artifacts, app):
                print(f"  {'*' if version == current else ' '} {version}")
    elif args.models_command == "publish":
        bundle.publish(args.artifacts, args.app, args.version)
        print(f"{args.app}: published {args.version}")
    elif args.models_command == "rollback":
        published = bundle.rollback(args.artifacts, args.app)
        print(f"{args.app}: rolled back to {published.version}")
    else:
        version = args.version or bundle.current_version(args.artifacts, args.app)
        if version is None:
            raise bundle.BundleError(f"app {args.app!r} has no published version")
        checked = bundle.verify(bundle.app_dir(args.artifacts, args.app) / version)
        print(f"{args.app} {checked.version}: ok ({len(checked.manifest['files'])} files match their sha256)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.server_config import load_server_config, new_key, write_server_config
    config = Path(args.config)
    if args.init:
        if config.exists():
            raise FileExistsError(f"{config} exists; remove it or pick another --config")
        keys = {app: new_key() for app in args.init}
        admin, platform = new_key(), new_key()
        write_server_config(config, keys, admin, platform, artifacts=args.artifacts)
        print(f"wrote {config}; keep these keys, they are stored only as sha256:")
        for app, key in keys.items():
            print(f"  app {app}: {key}")
        print(f"  admin: {admin}\n  platform: {platform}")
        return 0
    load_server_config(config)  # fail fast with a clear message before starting workers
    from minirec.server import run_server
    return run_server(config, args.host, args.port, args.workers)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "search":
        from bench.search_bench import run_search_bench
        run_search_bench(args.json, data=args.data, n_items=args.items, n_queries=args.queries,
                         reference_queries=args.reference_queries)
        return 0
    if args.bench_command == "profile":
        from bench import profile_serve
        return profile_serve.run_from_args(args)
    if args.bench_command == "capacity":
        from bench import capacity
        return capacity.run_from_args(args)
    if args.bench_command == "relevance":
        from bench import search_relevance
        return search_relevance.run_from_args(args)
    if args.bench_command == "apps":
        from bench import apps_bench
        return apps_bench.run_from_args(args)
    if args.bench_command == "audiences":
        from bench import audience_bench
        return audience_bench.run_from_args(args)
    from bench import serve_bench
    return serve_bench.run_from_args(args)


def _cmd_keys(args: argparse.Namespace) -> int:
    from serving.server_config import hash_key, new_key
    key = new_key()
    print(f"key:    {key}\nsha256: {hash_key(key)}")
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from serving.app_store import AppStore, AppStoreError, open_app_store
    from serving.server_config import load_server_config
    config = load_server_config(args.config)
    try:
        store = open_app_store(config) if args.action == "upgrade" else AppStore.for_config(config)
    except AppStoreError as exc:
        print(f"minirec db: error: {exc}", file=sys.stderr)
        return 2
    try:
        revision = store.revision()
        print(f"app store: {store.description}\nschema:    {revision or 'none (run `minirec db upgrade`)'} "
              f"(newest: {store.head()})")
        if revision:
            print(f"apps:      {len(store.apps())} live (change counter {store.version()})")
    finally:
        store.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from minirec.demo import run_demo
    return run_demo(Path(args.workdir), users=args.users, items=args.items, events=args.events,
                    port=args.port, api_key=args.api_key, serve=not args.no_serve)


def _cmd_report(args: argparse.Namespace) -> int:
    from minirec import report
    return report.run(args)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from minirec import simulate
    return simulate.run(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `minirec` console script."""
    args = build_parser().parse_args(argv)
    from recsys.config import ConfigError
    from offline_training.datafolder import DataError
    from recsys.bundle import BundleError
    from serving.server_config import ServerConfigError
    handlers = {"data": _cmd_data, "train": _cmd_train, "train-all": _cmd_train_all, "evaluate": _cmd_evaluate, "models": _cmd_models,
                "serve": _cmd_serve, "keys": _cmd_keys, "bench": _cmd_bench, "demo": _cmd_demo,
                "report": _cmd_report, "simulate": _cmd_simulate, "db": _cmd_db}
    try:
        return handlers[args.command](args)
    except (DataError, ConfigError, BundleError, ServerConfigError, FileExistsError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("MINIREC_DEBUG"):
            raise
        print(f"minirec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minirec {args.command}: interrupted; nothing was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
