// The demo storefront: a mini-program's home feed, exclusive shelf, search box (shading word, hot list,
// discovery chips, as-you-type suggestions), result page and item page with its related shelf, all
// from the minirec API — and the events a real client would send back (docs/experiments.md).
//
// URL: /demo?app=APP&key=KEY&known=USER&newcomer=USER  (the storefront's key is not a secret: a
// mini-program ships it to every phone). Views live in the hash (#/, #/search, #/results?q=, #/item/ID)
// so the browser's back button works as in an app.

import { Api, el, fmt, params, uuid } from "./api.js";

const api = new Api(params.get("app") || "demo", params.get("key") || "");
const PRESETS = { known: params.get("known") || "", newcomer: params.get("newcomer") || "", anonymous: "" };
const $ = (id) => document.getElementById(id);

const state = {
  userId: "",
  /** item_id → {item, requestId}: what was shown where, so a click or a purchase credits that response. */
  shown: new Map(),
  shading: null,
  /** Where the next result page's search came from (typed, shading, discovery, hot, suggest). */
  pendingSource: null,
  /** Events in flight: a feed waits for them, so it reflects the click that led back to it. */
  outbox: Promise.resolve(),
  sent: 0,
  renderSeq: 0,
  suggestSeq: 0,
  suggestTimer: 0,
};

// --- events -----------------------------------------------------------------------------------

/** POST events for the current user (anonymous visitors have no user_id, which events need). */
function track(events) {
  if (!state.userId || !events.length) return state.outbox;
  const batch = events.map((e) => ({ event_id: uuid(), user_id: state.userId, ...e }));
  pending(+1);
  state.outbox = state.outbox
    .then(() => api.post("events", { events: batch }))
    .then((r) => {
      state.sent += r.accepted;
      $("event-count").textContent = String(state.sent);
    })
    .catch(showError)
    .finally(() => pending(-1));
  return state.outbox;
}

/** Batches not yet answered, on the footer's counter (tests wait for 0 before reading the analytics). */
function pending(delta) {
  const counter = $("event-count");
  counter.dataset.pending = String(Number(counter.dataset.pending || 0) + delta);
}

function trackImpressions(response) {
  track(response.items.map((item) => ({ type: "impression", item_id: item.item_id, request_id: response.request_id })));
}

// --- rendering helpers ------------------------------------------------------------------------

function showError(err) {
  const box = $("error");
  box.textContent = `出错了 ${err.code || "error"}: ${err.message}`;
  box.hidden = false;
}

/** One line with what answered: strategy, experiment / variant, model version, request_id. */
function debugLine(r) {
  const parts = [];
  if (r.strategy) parts.push(`strategy ${r.strategy}`);
  parts.push(r.experiment ? `experiment ${r.experiment}/${r.variant}` : "no experiment");
  if (r.degraded) parts.push("degraded");
  parts.push(`model ${r.model_version}`, `request ${r.request_id}`);
  const line = el("p", { class: "debug-line", data: { strategy: r.strategy || "", requestId: r.request_id } }, parts.join(" · "));
  $("debug-last").textContent = parts.join(" · ");
  return r.note ? [el("p", { class: "note" }, r.note), line] : line;
}

function hue(category) {
  let h = 0;
  for (const ch of category.split("/")[0]) h = (h * 31 + ch.codePointAt(0)) % 8;
  return `hue-${h}`;
}

/** An item card; clicking it sends a click credited to `response` and opens the item page. */
function card(item, response, layout = "grid") {
  const leaf = item.category.split("/").pop();
  return el("a", {
    class: `card ${layout}`, href: `#/item/${encodeURIComponent(item.item_id)}`, data: { itemId: item.item_id },
    onclick: (event) => {
      event.preventDefault();
      state.shown.set(item.item_id, { item, requestId: response.request_id });
      track([{ type: "click", item_id: item.item_id, request_id: response.request_id }]);
      location.hash = `#/item/${encodeURIComponent(item.item_id)}`;
    },
  },
  el("div", { class: `thumb ${hue(item.category)}` }, leaf),
  el("div", { class: "name" }, item.title),
  el("div", { class: "price" }, fmt.money(item.price)),
  el("div", { class: "reason" }, item.reason));
}

function shelf(title, response, { layout = "grid", cls = "" } = {}) {
  for (const item of response.items) {
    if (!state.shown.has(item.item_id)) state.shown.set(item.item_id, { item, requestId: response.request_id });
  }
  return el("section", { class: `shelf ${cls}`, data: { requestId: response.request_id, strategy: response.strategy || "" } },
    el("h2", {}, title),
    response.items.length
      ? el("div", { class: layout === "row" ? "row" : "grid" }, response.items.map((i) => card(i, response, layout)))
      : el("p", { class: "muted" }, "暂无商品 (nothing to show)"),
    debugLine(response));
}

// --- views ------------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/");
  if (parts[0] === "item" && parts[1]) return { name: "item", id: decodeURIComponent(parts[1]) };
  if (parts[0] === "results") return { name: "results", q: new URLSearchParams(query || "").get("q") || "" };
  if (parts[0] === "search") return { name: "search" };
  return { name: "home" };
}

async function render() {
  const r = route();
  const seq = ++state.renderSeq;
  const view = $("view");
  view.dataset.view = r.name;
  view.dataset.ready = "0";
  $("error").hidden = true;
  $("back").hidden = r.name === "home";
  try {
    const nodes = await VIEWS[r.name](r);
    if (seq !== state.renderSeq) return; // the user moved on while this loaded
    view.replaceChildren(...[nodes].flat());
    if (r.name !== "results" && r.name !== "search") $("q").value = "";
    window.scrollTo(0, 0);
  } catch (err) {
    if (seq !== state.renderSeq) return;
    view.replaceChildren();
    showError(err);
  }
  view.dataset.ready = "1";
}

const VIEWS = {
  async home() {
    await state.outbox; // the feed should already know the events just sent
    const user = state.userId || undefined;
    const [feed, exclusive] = await Promise.all([
      api.get("recommend/home", { user_id: user, n: 20 }),
      api.get("recommend/exclusive", { user_id: user, n: 8 })]);
    trackImpressions(exclusive);
    trackImpressions(feed);
    return [
      exclusive.items.length ? shelf("专享 For you", exclusive, { layout: "row", cls: "exclusive" }) : null,
      shelf("猜你喜欢 Recommended", feed, { cls: "feed" }),
    ].filter(Boolean);
  },

  async search() {
    const [hot, chips] = await Promise.all([
      api.get("search/hot", { n: 10 }),
      api.get("search/discover", { user_id: state.userId || undefined, n: 8 })]);
    track(chips.items.map((c) => ({ type: "impression", query: c.query, request_id: chips.request_id })));
    return el("div", { class: "search-panel" },
      el("section", { class: "suggestions", id: "suggestions", hidden: true }),
      el("section", { class: "discover" }, el("h2", {}, "搜索发现 Discover"),
        el("div", { class: "chips" }, chips.items.map((c) =>
          el("button", { type: "button", class: "chip", title: c.reason, onclick: () => runSearch(c.query, "discovery") }, c.query)))),
      el("section", { class: "hot" }, el("h2", {}, "热搜榜 Hot"),
        el("ol", {}, hot.items.map((h) =>
          el("li", {}, el("button", { type: "button", class: "link", onclick: () => runSearch(h.query, "hot") }, h.query))))));
  },

  async results({ q }) {
    $("q").value = q;
    const source = state.pendingSource;
    state.pendingSource = null;
    if (!q) return el("p", { class: "muted" }, "输入关键词 (type a query)");
    await state.outbox;
    const r = await api.get("search", { q, user_id: state.userId || undefined, n: 20 });
    if (source) track([{ type: "search", query: q, source, request_id: r.request_id }]);
    trackImpressions(r);
    const notes = [];
    if (r.interpreted_as) notes.push(el("p", { class: "interpreted" }, `按「${r.interpreted_as}」搜索 (searched as)`));
    if (r.corrected_from) notes.push(el("p", { class: "interpreted" }, `已纠正「${r.corrected_from}」(corrected)`));
    if (r.fallback) notes.push(el("p", { class: "note" }, "没有完全匹配的商品，为你推荐相近品类 (no direct match: closest categories)"));
    if (r.did_you_mean && r.did_you_mean.length) {
      notes.push(el("p", { class: "did-you-mean" }, "你是不是要找 ", r.did_you_mean.map((d) =>
        el("button", { type: "button", class: "chip", onclick: () => runSearch(d, "suggest") }, d))));
    }
    if (r.direct) notes.push(el("p", { class: "direct" }, `${r.direct.type}: ${r.direct.name} (${r.direct.count})`));
    return [el("div", { class: "results-head" }, el("h2", {}, `「${q}」${fmt.num(r.total)} 件`), notes),
      shelf("搜索结果 Results", r, { cls: "results" })];
  },

  async item({ id }) {
    const known = state.shown.get(id);
    const related = await api.get(`recommend/related/${encodeURIComponent(id)}`, { user_id: state.userId || undefined, n: 10 });
    trackImpressions(related);
    const item = known ? known.item : null;
    const buy = el("button", { type: "button", class: "buy", disabled: !item || !state.userId,
      title: state.userId ? "" : "匿名用户不能下单 (anonymous visitors cannot buy)",
      onclick: async () => {
        buy.disabled = true;
        await track([{ type: "purchase", item_id: id, request_id: known.requestId, amount: item.price }]);
        buy.textContent = "已下单 ✓ Bought";
      } }, "立即购买 Buy");
    return el("article", { class: "item-page", data: { itemId: id } },
      el("div", { class: `hero ${item ? hue(item.category) : "hue-0"}` }, item ? item.category.split("/").pop() : id),
      el("h1", {}, item ? item.title : id),
      item ? el("p", { class: "price big" }, fmt.money(item.price)) : null,
      item ? el("p", { class: "meta" }, `${item.category} · ${item.item_id}`) : null,
      item ? el("p", { class: "reason" }, item.reason) : null,
      buy,
      shelf("看了又看 Related", related, { layout: "row", cls: "related" }));
  },
};

// --- search box -------------------------------------------------------------------------------

function runSearch(q, source) {
  state.pendingSource = source;
  const hash = `#/results?q=${encodeURIComponent(q)}`;
  if (location.hash === hash) render();
  else location.hash = hash;
}

async function loadShading() {
  const input = $("q");
  try {
    const r = await api.get("search/shading", { user_id: state.userId || undefined });
    state.shading = r.query ? r : null;
    input.placeholder = r.query || "搜索商品 Search";
    input.dataset.requestId = r.request_id;
    if (r.query) track([{ type: "impression", query: r.query, request_id: r.request_id }]);
  } catch (err) {
    input.placeholder = "搜索商品 Search";
    showError(err);
  }
}

function onInput() {
  clearTimeout(state.suggestTimer);
  const prefix = $("q").value.trim();
  if (route().name !== "search") {
    location.hash = "#/search";
    return; // the search view renders, then shows suggestions for what is typed (see below)
  }
  state.suggestTimer = setTimeout(() => showSuggestions(prefix), 120);
}

async function showSuggestions(prefix) {
  const box = $("suggestions");
  if (!box) return;
  const seq = ++state.suggestSeq;
  if (!prefix) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  try {
    const r = await api.get("search/suggest", { prefix, user_id: state.userId || undefined, n: 8 });
    if (seq !== state.suggestSeq || !$("suggestions")) return; // a newer keystroke won
    box.replaceChildren(el("ul", {}, r.suggestions.map((s) => el("li", {},
      el("button", { type: "button", class: "suggestion", data: { kind: s.kind }, onclick: () => runSearch(s.text, "suggest") },
        s.text, el("span", { class: "kind" }, s.kind))))));
    box.hidden = r.suggestions.length === 0;
    box.dataset.prefix = prefix;
  } catch (err) {
    showError(err);
  }
}

// --- users ------------------------------------------------------------------------------------

function switchUser(userId) {
  state.userId = userId;
  state.shown.clear();
  $("debug-user").textContent = userId || "anonymous (no user_id: no events)";
  loadShading();
  if (route().name === "home") render();
  else location.hash = "#/";
}

function initUsers() {
  const select = $("user-preset");
  for (const option of select.options) {
    if (option.value in PRESETS && option.value !== "anonymous" && !PRESETS[option.value]) {
      option.disabled = true;
      option.textContent += ` (?${option.value}=)`;
    }
  }
  const first = ["known", "newcomer"].find((p) => PRESETS[p]) || "anonymous";
  select.value = params.get("as") && params.get("as") in PRESETS ? params.get("as") : first;
  select.addEventListener("change", () => {
    $("custom-user").hidden = select.value !== "custom";
    if (select.value === "custom") $("custom-user-id").focus();
    else switchUser(PRESETS[select.value]);
  });
  $("custom-user").addEventListener("submit", (event) => {
    event.preventDefault();
    switchUser($("custom-user-id").value.trim());
  });
  return PRESETS[select.value];
}

function init() {
  $("shop-title").textContent = `${api.app} 商城`;
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("q").value.trim();
    if (typed) runSearch(typed, "typed");
    else if (state.shading) runSearch(state.shading.query, "shading");
  });
  $("q").addEventListener("focus", () => {
    if (route().name === "home" || route().name === "item") location.hash = "#/search";
  });
  $("q").addEventListener("input", onInput);
  $("back").addEventListener("click", () => (history.length > 1 ? history.back() : (location.hash = "#/")));
  window.addEventListener("hashchange", async () => {
    await render();
    if (route().name === "search") showSuggestions($("q").value.trim());
  });
  state.userId = initUsers();
  $("debug-user").textContent = state.userId || "anonymous (no user_id: no events)";
  loadShading();
  render();
}

init();
