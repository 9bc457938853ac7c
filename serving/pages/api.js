// Shared by the dashboard and the demo storefront: API calls with the JSON error shape, DOM helpers,
// number formats. Plain ES module, no build step, nothing fetched from anywhere but this server.

/** The page's URL parameters (`?app=…&key=…`). */
export const params = new URLSearchParams(location.search);

/** A failed API call: HTTP status and the `{"error": {"code", "message"}}` of the response. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.code}${this.status ? ` (${this.status})` : ""}: ${this.message}`;
  }
}

/** Calls under `/v1/apps/{app}/…` with the key in `X-API-Key`. URLs are relative to the page, so the
 * pages also work behind a reverse proxy that serves minirec under a path prefix. */
export class Api {
  constructor(app, key) {
    this.app = app;
    this.key = key;
  }

  url(path, query = {}) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") q.set(name, String(value));
    }
    const base = `v1/apps/${encodeURIComponent(this.app)}/${path}`.replace(/\/$/, "");
    return q.toString() ? `${base}?${q}` : base;
  }

  get(path, query) {
    return request("GET", this.url(path, query), this.key);
  }

  post(path, body) {
    return request("POST", this.url(path), this.key, body);
  }
}

async function request(method, url, key, body) {
  const headers = { Accept: "application/json" };
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network", `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!response.ok) {
    const error = doc && doc.error;
    throw new ApiError(response.status, (error && error.code) || `http_${response.status}`,
      (error && error.message) || text.slice(0, 200) || response.statusText);
  }
  return doc;
}

/** A unique event id: `crypto.randomUUID` where the page is a secure context (https, localhost),
 * else 128 random bits from `getRandomValues` (available everywhere). */
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `el("div", {class: "x", data: {id: 1}, onclick: f}, "text", child, [more])`. Text goes in as text,
 * never as HTML, so item titles and queries cannot inject markup. */
export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** The same for SVG elements (charts). */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "data") {
      for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    } else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Number formats (null and NaN show as "–"). */
export const fmt = {
  num(x, digits = 0) {
    return finite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–";
  },
  pct(x, digits = 1) {
    return finite(x) ? `${(x * 100).toFixed(digits)}%` : "–";
  },
  signedPct(x, digits = 1) {
    return finite(x) ? `${x >= 0 ? "+" : ""}${(x * 100).toFixed(digits)}%` : "–";
  },
  money(x) {
    return finite(x) ? `¥${x.toLocaleString("en-US", { maximumFractionDigits: 2 })}` : "–";
  },
  date(unixSeconds, withHour = false) {
    if (!finite(unixSeconds)) return "–";
    const d = new Date(unixSeconds * 1000);
    const day = `${d.getMonth() + 1}/${d.getDate()}`;
    return withHour ? `${day} ${String(d.getHours()).padStart(2, "0")}:00` : day;
  },
};

export function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}
