// The merchant dashboard: reads GET /v1/apps/{app}/analytics (docs/experiments.md), …/models and
// …/search/hot with the key the user enters, and draws them. The HTML holds no data.

import { Api, el, finite, fmt, params } from "./api.js";
import { barChart, intervalChart, lineChart } from "./charts.js";

const STORE = { key: "minirec.dashboard.key", app: "minirec.dashboard.app" };
/** The per-user metrics of docs/experiments.md: [field, label, format]. */
const METRICS = [
  ["ctr", "CTR", (v) => fmt.pct(v, 2)],
  ["conversion", "Conversion", (v) => fmt.pct(v, 1)],
  ["gmv_per_user", "GMV / user", fmt.money],
  ["exposure_per_user", "Exposure / user", (v) => fmt.num(v, 1)],
  ["search_pv_per_user", "Search PV / user", (v) => fmt.num(v, 2)],
];
const SOURCES = ["typed", "shading", "discovery", "hot", "suggest"];
const $ = (id) => document.getElementById(id);

function init() {
  const form = $("settings");
  $("app").value = params.get("app") || localStorage.getItem(STORE.app) || "";
  $("key").value = params.get("key") || localStorage.getItem(STORE.key) || "";
  $("from").value = params.get("from") || "";
  $("to").value = params.get("to") || "";
  if (params.has("key")) {
    // keep the key in this browser, not in the address bar (history, screenshots, shared links)
    localStorage.setItem(STORE.key, params.get("key"));
    const url = new URL(location.href);
    url.searchParams.delete("key");
    history.replaceState(null, "", url);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("forget").addEventListener("click", () => {
    localStorage.removeItem(STORE.key);
    $("key").value = "";
    setStatus("The key was removed from this browser.");
  });
  if ($("app").value && $("key").value) load();
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

/** Local midnight of a yyyy-mm-dd field as Unix seconds (`to` is the end of its day). */
function dayBound(value, endOfDay) {
  if (!value) return null;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + (endOfDay ? 1 : 0)).getTime() / 1000;
}

async function load() {
  const app = $("app").value.trim();
  const key = $("key").value.trim();
  localStorage.setItem(STORE.app, app);
  localStorage.setItem(STORE.key, key);
  const url = new URL(location.href);
  url.searchParams.set("app", app);
  for (const name of ["from", "to"]) {
    if ($(name).value) url.searchParams.set(name, $(name).value);
    else url.searchParams.delete(name);
  }
  history.replaceState(null, "", url);

  document.body.dataset.state = "loading";
  setStatus(`Loading ${app} …`);
  const api = new Api(app, key);
  loadInsight(api);  // its own request and panel: a slow or failed insight never holds the rest
  const range = { from: dayBound($("from").value, false), to: dayBound($("to").value, true) };
  const [analytics, models, hot] = await Promise.allSettled([
    api.get("analytics", range), api.get("models"), api.get("search/hot", { n: 10 })]);

  // the hot list is an app route: when the key opened the models (an app route that also takes the
  // admin key) but not the hot list, it is the admin key — a note, not an error
  const adminKey = models.status === "fulfilled" && hot.status === "rejected" && [401, 403].includes(hot.reason.status);
  const errors = [analytics, models, hot].filter((r) => r.status === "rejected" && !(r === hot && adminKey))
    .map((r) => r.reason);
  if (analytics.status === "fulfilled") renderAnalytics(analytics.value);
  else showAnalyticsError(analytics.reason);
  fill("models", models.status === "fulfilled" ? renderModels(models.value) : errorBox(models.reason));
  fill("hot", hot.status === "fulfilled" ? renderHot(hot.value)
    : adminKey ? el("p", { class: "muted" }, "The hot list needs the app's own key.") : errorBox(hot.reason));

  if (analytics.status === "fulfilled") {
    const a = analytics.value;
    setStatus(`${a.app}: ${fmt.num(a.events.total)} events from ${new Date(a.from * 1000).toLocaleString()} `
      + `to ${new Date(a.to * 1000).toLocaleString()} (credit window ${a.credit_window_hours} h)`
      + (errors.length ? ` · ${errors.length} part(s) failed` : ""), errors.length > 0);
  } else {
    setStatus(`Analytics: ${analytics.reason}`, true);
  }
  document.body.dataset.errors = String(errors.length);
  document.body.dataset.state = "ready";
}

/** Replace a container's content. */
function fill(id, ...nodes) {
  $(id).replaceChildren(...nodes.flat());
}

function errorBox(err) {
  return el("p", { class: "error" }, String(err));
}

function showAnalyticsError(err) {
  fill("overview");
  for (const id of ["experiments", "timeseries", "scenes", "search-sources", "top-queries", "zero-queries", "fallback-queries", "risk"]) {
    fill(id, errorBox(err));
  }
}

function renderAnalytics(a) {
  fill("overview", renderOverview(a));
  fill("experiments", renderExperiments(a.experiments || []));
  fill("timeseries", renderTimeseries(a));
  fill("scenes", renderScenes(a.scenes || []));
  const search = a.search || {};
  fill("search-sources", renderSources(search.by_source || {}));
  fill("top-queries", queryTable(search.top_queries));
  fill("zero-queries", queryTable(search.zero_result_queries));
  fill("fallback-queries", queryTable(search.fallback_queries));
  fill("risk", renderRisk(a.risk));
}

// Risk control (docs/risk.md): how much traffic was judged not human, and why.
function renderRisk(risk) {
  if (!risk || !risk.filtered_events) return el("p", { class: "muted" }, "nothing filtered in this period");
  const summary = el("p", {}, `${fmt.num(risk.filtered_events)} events (${fmt.pct(risk.filtered_share, 2)}) from ` +
    `${fmt.num(risk.filtered_users)} user ids left out.`);
  const rows = (risk.by_reason || []).map((r) => el("tr", {},
    el("td", {}, r.reason), el("td", { class: "num" }, fmt.num(r.events)), el("td", { class: "num" }, fmt.num(r.users))));
  return el("div", {}, summary, el("table", { class: "queries" },
    el("thead", {}, el("tr", {}, el("th", {}, "reason"), el("th", {}, "events"), el("th", {}, "users"))),
    el("tbody", {}, rows)));
}

function renderOverview(a) {
  const by = (a.events && a.events.by_type) || {};
  const gmv = (a.timeseries || []).reduce((sum, b) => sum + (b.gmv || 0), 0);
  const impressions = by.impression || 0;
  const card = (label, value) => el("div", { class: "card" }, el("span", {}, label), el("strong", {}, value));
  return [
    card("Events", fmt.num(a.events ? a.events.total : 0)),
    card("Impressions", fmt.num(impressions)),
    card("Clicks", fmt.num(by.click || 0)),
    card("CTR (all)", impressions ? fmt.pct((by.click || 0) / impressions, 2) : "–"),
    card("Purchases", fmt.num(by.purchase || 0)),
    card("GMV", fmt.money(gmv)),
    card("Searches", fmt.num(by.search || 0)),
  ];
}

/** "0.123 [0.1, 0.15]" for a `{value, ci95}` metric. */
function withInterval(metric, format) {
  if (!metric || !finite(metric.value)) return "–";
  const ci = metric.ci95;
  return ci && finite(ci[0]) && finite(ci[1]) ? `${format(metric.value)} [${format(ci[0])}, ${format(ci[1])}]` : format(metric.value);
}

function renderExperiments(experiments) {
  if (!experiments.length) {
    return el("p", { class: "muted" }, "No experiment for this app in minirec.toml (docs/experiments.md says how to add one).");
  }
  return experiments.map((exp) => {
    const names = Object.keys(exp.variants || {});
    const rows = [];
    for (const name of names) {
      const lift = (exp.variants[name] || {}).lift;
      if (name === exp.control || !lift) continue;
      for (const [field, label] of METRICS) {
        const l = lift[field];
        if (!l) continue;
        rows.push({ label: `${label} · ${name}`, value: l.value, lo: l.ci95 && l.ci95[0], hi: l.ci95 && l.ci95[1],
          significant: Boolean(l.significant) });
      }
    }
    const table = el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "variant"), el("th", {}, "users"), METRICS.map(([, label]) => el("th", {}, label)))),
      el("tbody", {}, names.map((name) => {
        const v = exp.variants[name] || {};
        return el("tr", { class: name === exp.control ? "control" : "" },
          el("td", {}, name, name === exp.control ? el("span", { class: "badge" }, "control") : null),
          el("td", { class: "num" }, fmt.num(v.users)),
          METRICS.map(([field, , format]) => el("td", { class: "num" }, withInterval(v[field], format))));
      })));
    return el("article", { class: "experiment", data: { experiment: exp.name } },
      el("h3", {}, exp.name, el("small", {}, ` scene ${exp.scene} · control ${exp.control}`)),
      intervalChart(rows, { title: `Lifts of ${exp.name} against ${exp.control}`, format: (v) => fmt.signedPct(v, 1) }),
      el("p", { class: "legend" }, "Point: lift (treatment / control − 1); bar: 95% interval; green/red: significant."),
      table);
  });
}

function renderTimeseries(a) {
  const series = a.timeseries || [];
  const hourly = a.to - a.from <= 3 * 86400;
  const chart = (title, y, format, color) => el("figure", {},
    el("figcaption", {}, title),
    lineChart(series.map((b) => ({ t: b.t, y: y(b) })), { title, format, hourly, color }));
  return [
    chart("CTR", (b) => (b.impressions ? b.clicks / b.impressions : null), (v) => fmt.pct(v, 1), "#1677ff"),
    chart("GMV", (b) => b.gmv, fmt.money, "#0f9d58"),
    chart("Exposure (impressions)", (b) => b.impressions, (v) => fmt.num(v), "#b7791f"),
  ];
}

function renderScenes(scenes) {
  if (!scenes.length) return el("p", { class: "muted" }, "No events credited to a scene in this period.");
  return el("table", {},
    el("thead", {}, el("tr", {}, ["scene", "experiment", "variant", "users", "impressions", "clicks", "purchases", "GMV"]
      .map((h) => el("th", {}, h)), METRICS.map(([, label]) => el("th", {}, label)))),
    el("tbody", {}, scenes.map((s) => el("tr", {},
      el("td", {}, s.scene), el("td", {}, s.experiment || "–"), el("td", {}, s.variant || "–"),
      [s.users, s.impressions, s.clicks, s.purchases].map((n) => el("td", { class: "num" }, fmt.num(n))),
      el("td", { class: "num" }, fmt.money(s.gmv)),
      METRICS.map(([field, , format]) => el("td", { class: "num" }, withInterval(s[field], format)))))));
}

function renderSources(bySource) {
  const names = [...SOURCES.filter((s) => s in bySource), ...Object.keys(bySource).filter((s) => !SOURCES.includes(s))];
  const bars = names.map((name) => {
    const s = bySource[name] || {};
    return { label: name, value: s.searches || 0, note: s.ctr && finite(s.ctr.value) ? `CTR ${fmt.pct(s.ctr.value, 1)}` : "" };
  });
  return barChart(bars, { title: "Searches by source", format: (v) => fmt.num(v) });
}

function queryTable(rows) {
  if (!rows || !rows.length) return el("p", { class: "muted" }, "none");
  return el("table", { class: "queries" },
    el("tbody", {}, rows.map((r) => el("tr", {}, el("td", {}, r.query), el("td", { class: "num" }, fmt.num(r.count))))));
}

function renderHot(hot) {
  if (!hot.items.length) return el("p", { class: "muted" }, "none yet");
  return [
    el("ol", { class: "hot" }, hot.items.map((h) => el("li", {}, h.query, el("span", { class: "muted" }, ` ${fmt.num(h.score, 1)}`)))),
    el("p", { class: "legend" }, hot.source === "live" ? "Live: time-decayed search counts." : "From the training log (no live searches yet)."),
  ];
}

// --- models -----------------------------------------------------------------------------------

function renderModels(m) {
  const loaded = m.loaded || {};
  const head = el("p", {},
    "Serving ", el("strong", { class: "version" }, loaded.version || "nothing yet"),
    loaded.loaded_at ? ` since ${new Date(loaded.loaded_at * 1000).toLocaleString()}` : "",
    ` · published ${m.published || "none"} · ${m.total_versions} version(s) on disk`);
  const parts = [head];
  if (loaded.last_error) parts.push(el("p", { class: "error" }, `Last reload: ${loaded.last_error}`));
  const current = m.versions.find((v) => v.loaded) || m.versions[0];
  if (current && Object.keys(current.metrics || {}).length) {
    const bars = [];
    for (const [protocol, r] of Object.entries(current.metrics)) {
      const k = ndcgKey(r.model);
      if (!k) continue;
      bars.push({ label: `${protocol}`, value: r.model[k], note: `${k}` });
      bars.push({ label: "popularity", value: r.popularity[k] });
    }
    parts.push(el("figure", { class: "offline" }, el("figcaption", {}, `Offline NDCG of ${current.version} (model, then popularity)`),
      barChart(bars, { title: "Offline NDCG, model vs popularity", format: (v) => fmt.num(v, 3) })));
  }
  parts.push(el("table", { class: "versions" },
    el("thead", {}, el("tr", {}, ["version", "created", "publish gate", "offline metrics", "tuning"].map((h) => el("th", {}, h)))),
    el("tbody", {}, m.versions.map(versionRow))));
  return parts;
}

function ndcgKey(metrics) {
  return Object.keys(metrics || {}).find((k) => k.startsWith("ndcg@"));
}

function versionRow(v) {
  const badges = [v.published ? el("span", { class: "badge" }, "published") : null,
    v.loaded ? el("span", { class: "badge live" }, "serving") : null];
  if (v.error) return el("tr", {}, el("td", {}, v.version, badges), el("td", { colspan: 4, class: "error" }, v.error));
  const gate = v.gate
    ? `${v.gate.passed ? "passed" : "failed"}: new ${fmt.num(v.gate.new, 4)} vs popularity ${fmt.num(v.gate.popularity, 4)}`
      + (v.gate.reasons && v.gate.reasons.length ? ` (${v.gate.reasons.join("; ")})` : "")
    : "–";
  const metrics = Object.entries(v.metrics || {}).map(([protocol, r]) => {
    const k = ndcgKey(r.model);
    return el("div", {}, `${protocol}: ${k} ${fmt.num(r.model[k], 4)} vs ${fmt.num(r.popularity[k], 4)} (${fmt.num(r.n_users)} users)`);
  });
  return el("tr", {},
    el("td", {}, v.version, badges),
    el("td", {}, v.created_at ? new Date(v.created_at).toLocaleString() : "–"),
    el("td", {}, gate),
    el("td", {}, metrics.length ? metrics : "not evaluated"),
    el("td", {}, tuningSummary(v.tuning)));
}

function tuningSummary(t) {
  if (!t) return "–";
  const lines = [];
  const known = t.known;
  if (known) {
    const params = Object.entries(known.params || {}).map(([p, val]) => `${p}=${typeof val === "number" ? fmt.num(val, 3) : val}`);
    lines.push(el("div", {}, el("strong", {}, known.family),
      ` NDCG ${fmt.num(known.value, 4)} vs popularity ${fmt.num(known.popularity, 4)} · ${fmt.num(known.n_trials)} trials in ${fmt.num(known.seconds, 1)} s`
      + (finite(known.gain) ? ` · gain ${fmt.num(known.gain, 4)} ± ${fmt.num(known.stderr, 4)}` : "")));
    if (params.length) lines.push(el("div", { class: "muted" }, params.join(", ")));
    if (known.note) lines.push(el("div", { class: "muted" }, known.note));
  }
  const cold = t.cold;
  if (cold) {
    lines.push(el("div", {}, el("strong", {}, "first visits"),
      ` NDCG ${fmt.num(cold.value, 4)} vs popularity ${fmt.num(cold.popularity, 4)} · ${fmt.num(cold.n_trials)} trials`));
  }
  for (const reason of t.skipped || []) lines.push(el("div", { class: "muted" }, `skipped: ${reason}`));
  return lines.length ? lines : "not tuned (config as written)";
}

init();

// User insight (docs/insight.md): segments, new vs returning, profile distributions. Every count is
// >= k users or "suppressed"; the page never shows a number the API did not.
async function loadInsight(api) {
  fill("insight", el("p", { class: "muted" }, "Loading insight …"));
  let doc;
  try {
    doc = await api.get("insight");
  } catch (err) {
    fill("insight", errorBox(err));
    return;
  }
  if (doc.suppressed) {
    fill("insight", el("p", { class: "muted" }, doc.note || "suppressed"));
    return;
  }
  const count = (n) => (n === null || n === undefined ? "suppressed" : `≈${fmt.num(n)}`);
  const segRows = doc.segments.map((s) => el("tr", {},
    el("td", { title: s.definition }, s.segment), el("td", { class: "num" }, count(s.users)),
    el("td", { class: "num" }, s.avg_orders !== undefined ? fmt.num(s.avg_orders, 2) : "–"),
    el("td", { class: "num" }, s.avg_spend !== undefined ? fmt.money(s.avg_spend) : "–"),
    el("td", { class: "num" }, s.avg_recency_days !== undefined ? fmt.num(s.avg_recency_days, 1) : "–"),
    el("td", {}, (s.top_categories || []).map((c) => `${c.category} ${count(c.users)}`).join(" · "))));
  const segments = el("table", { class: "queries" },
    el("thead", {}, el("tr", {}, ...["segment", "users", "orders / buyer", "spend / buyer", "days since purchase",
      "top categories (users)"].map((h) => el("th", {}, h)))), el("tbody", {}, segRows));
  const life = el("p", {}, `${count(doc.users)} users · last ${doc.windows.new_days} days: ` +
    doc.lifecycle.map((c) => `${c.value} ${count(c.users)}`).join(" · "));
  const fields = (title, group) => Object.entries(group).map(([name, f]) => el("div", {},
    el("h3", {}, `${title} ${name} `, el("small", {}, f.suppressed ? "suppressed" : `${count(f.users)} users`)),
    el("p", {}, f.values.map((v) => `${v.value ?? "(other values)"}: ${count(v.users)}`).join(" · "))));
  fill("insight", life, segments,
    el("div", { class: "grid3" }, ...fields("商家 Merchant", doc.merchant_profile),
      ...fields("平台 Platform (consented)", doc.platform_profile)),
    el("p", { class: "muted" }, `k = ${doc.k_min}, counts rounded to ${doc.round_to}; as of ` +
      `${new Date(doc.as_of * 1000).toLocaleString()}`));
}
