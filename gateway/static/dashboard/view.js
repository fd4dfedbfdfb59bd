// Small DOM and formatting helpers shared by the panels. Text only: nothing from the API is
// ever parsed as HTML (no innerHTML), so a headline cannot inject markup.

/** An element with attributes (`text` sets textContent) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** The panel's status line: `kind` "error", "warn" or "" (plain). Empty text hides it. */
export function note(panel, text, kind = "") {
  const line = panel.querySelector(".note");
  line.textContent = text;
  line.dataset.kind = kind;
  line.style.visibility = text ? "visible" : "hidden";
}

const USD = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const SMALL = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 6 });
const COMPACT = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

export function usd(value) {
  return Math.abs(value) >= 1 ? USD.format(value) : SMALL.format(value);
}

export function compact(value) {
  return COMPACT.format(value);
}

/** "12 s ago", "3 min ago", … from an ISO time. */
export function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/**
 * Why a panel fed by providers of `categories` has nothing, from what the API says about those
 * providers (their state, stateReason, lastError): never a guess.
 */
export function whyEmpty(providers, categories, what) {
  if (providers === null) return `no ${what} yet`;
  const mine = providers.filter((p) => p.categories.some((c) => categories.includes(c)));
  const enabled = mine.filter((p) => p.enabled);
  if (enabled.length === 0) {
    return `no ${what}: no ${categories.join("/").toLowerCase()} provider is enabled in providers.toml`;
  }
  if (enabled.some((p) => p.state === "ONLINE" || p.state === "DEGRADED")) {
    return `no ${what} has been collected yet`;
  }
  if (enabled.every((p) => p.state === "UNCONFIGURED")) {
    return `no ${what}: every provider needs an API key (${enabled.map((p) => p.id).join(", ")})`;
  }
  const offline = enabled.filter((p) => p.state === "OFFLINE");
  if (offline.length > 0) {
    const first = offline[0];
    const detail = first.lastError || first.stateReason || "no answer";
    return `no ${what}: no provider is reachable (${first.id}: ${detail})`;
  }
  return `no ${what} yet: its providers have not answered so far`;
}
