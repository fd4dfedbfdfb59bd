// The provider grid and the list panels (news and Fear & Greed, chain heads and gas, whale
// transactions, alerts). Each loads with one query, follows its subscriptions, and when it has
// nothing says why in the API's own words (an error's message and code, a warning, or the state
// of the providers that feed it). A panel whose subscription the caller's tier does not allow
// says so and is reloaded by app.js on a slow timer instead (`polled`).

import { explain, warnings } from "./gql.js";
import { ago, compact, el, note, whyEmpty } from "./view.js";

const LIST_LENGTH = 8;
const RELOAD_AFTER_CHANGE_MS = 1000; // provider details after a state change (breaker, latency)
const RELOAD_GAP_MS = 30000; // at most one such reload per 30 s: a flapping provider costs little

// With the header's summary line: one request for both.
const PROVIDERS = `query DashboardProviders {
  providers { id name categories enabled state stateReason circuit lastError avgResponseMs lastCheckedAt }
  status { status version providers { total online offline } }
}`;
const PROVIDER_STATES = `subscription DashboardProviderStates {
  providerStates { provider newState reason at }
}`;

export class ProvidersPanel {
  constructor(client, panel, app) {
    this.client = client;
    this.panel = panel;
    this.app = app;
    this.list = panel.querySelector(".tiles");
    this.tiles = new Map();
    this.refresh = null;
    this.reloadedAt = 0;
  }

  async load() {
    const response = await this.client.query(PROVIDERS);
    const providers = response.data ? response.data.providers : null;
    this.summarise(response);
    if (!providers) {
      note(this.panel, `Provider list unavailable: ${explain(response.errors || [])}`, "error");
      return;
    }
    this.app.providers = providers;
    this.reloadedAt = Date.now();
    const enabled = providers.filter((p) => p.enabled);
    if (!enabled.length) note(this.panel, "No provider is enabled: add some to providers.toml.", "warn");
    else if (!enabled.some((p) => p.state === "ONLINE" || p.state === "DEGRADED") && enabled.some((p) => p.state === "OFFLINE")) {
      note(this.panel, "No upstream is reachable: every enabled provider is offline (see each tile's last error).", "error");
    } else note(this.panel, "");
    for (const provider of enabled) this.draw(provider);
  }

  /** The header's line: the gateway's status and provider counts, or why they are missing. */
  summarise(response) {
    const line = document.getElementById("summary");
    if (!response.data || !response.data.status) {
      const errors = response.errors || [];
      line.textContent = explain(errors);
      if (errors.some((e) => e.extensions && e.extensions.code === "UNAUTHENTICATED")) {
        document.getElementById("key-help").textContent = "This gateway needs an API key.";
      }
      return;
    }
    const { status, version, providers: counts } = response.data.status;
    line.textContent = `${status} · v${version} · ${counts.online}/${counts.total} providers online` +
      (counts.offline ? `, ${counts.offline} offline` : "");
  }

  draw(provider) {
    let tile = this.tiles.get(provider.id);
    if (!tile) {
      tile = el("li", { class: "tile", "data-provider": provider.id, tabindex: "0" });
      this.tiles.set(provider.id, tile);
      this.list.append(tile);
    }
    const latency = provider.avgResponseMs === null ? "" : ` · ${Math.round(provider.avgResponseMs)} ms`;
    const why = provider.lastError || provider.stateReason || "";
    tile.dataset.state = provider.state;
    tile.setAttribute("aria-label", `${provider.name}: ${provider.state}${why ? `, ${why}` : ""}`);
    tile.title = why;
    tile.replaceChildren(
      el("b", { text: provider.name }),
      el("span", { class: "state", text: provider.state }),
      el("span", { text: ` · breaker ${provider.circuit.toLowerCase().replace("_", " ")}${latency}` }),
      el("span", { class: "err", text: why || (provider.lastCheckedAt ? `checked ${ago(provider.lastCheckedAt)}` : "not checked yet") }),
    );
  }

  subscribe() {
    this.client.subscribe(PROVIDER_STATES, () => ({}), {
      next: (payload) => {
        const change = payload.data && payload.data.providerStates;
        if (!change) return;
        const known = (this.app.providers || []).find((p) => p.id === change.provider);
        if (known) {
          known.state = change.newState;
          known.stateReason = change.reason;
          if (change.newState === "OFFLINE") known.lastError = change.reason;
          this.draw(known); // at once; breaker and latency follow with the reload below
        }
        if (this.refresh === null) {
          const wait = Math.max(RELOAD_AFTER_CHANGE_MS, this.reloadedAt + RELOAD_GAP_MS - Date.now());
          this.refresh = setTimeout(() => {
            this.refresh = null;
            this.load();
          }, wait);
        }
      },
      error: (errors) => note(this.panel, `Live provider states stopped: ${explain(errors)}`, "error"),
      unavailable: (reason) => note(this.panel, `Not live: ${reason}`, "warn"),
    }, 0);
  }
}

/** A list panel: `load` fills it from a query, `prepend` adds a live item on top. */
class ListPanel {
  constructor(client, panel, app) {
    this.client = client;
    this.panel = panel;
    this.app = app;
    this.list = panel.querySelector(".list");
    this.polled = null; // why this panel is reloaded instead of live (null: it is live)
    this.answer = null; // the last explainAnswer arguments, to explain again
  }

  fill(list, items, render) {
    list.replaceChildren(...items.slice(0, LIST_LENGTH).map(render));
  }

  prepend(list, item, render) {
    list.prepend(render(item));
    while (list.children.length > LIST_LENGTH) list.lastElementChild.remove();
  }

  /** The note for a query's answer: its errors, else its warnings, else why it is empty. */
  explainAnswer(response, count, categories, what) {
    this.answer = [response, count, categories, what];
    const polled = this.polled ? `Not live (${this.polled}): reloaded every 10 min.` : "";
    const told = warnings(response);
    if (response.errors && response.errors.length) note(this.panel, explain(response.errors), count ? "warn" : "error");
    else if (!count) note(this.panel, [whyEmpty(this.app.providers, categories, what), ...told, polled].filter(Boolean).join(". "), "warn");
    else if (told.length) note(this.panel, told.join("; "), "warn");
    else note(this.panel, polled, polled ? "warn" : "");
  }

  /** Explain an empty answer again, now that the provider list is known. */
  reexplain() {
    if (this.answer && !this.answer[1]) this.explainAnswer(...this.answer);
  }

  /** Follow a subscription; `onUnavailable` (default: the whole panel is polled) when refused. */
  follow(query, variables, onItem, priority, onUnavailable = null) {
    this.client.subscribe(query, () => variables, {
      next: (payload) => {
        if (payload.data) onItem(Object.values(payload.data)[0]);
      },
      error: (errors) => note(this.panel, `Live updates stopped: ${explain(errors)}`, "error"),
      unavailable: onUnavailable || ((reason) => {
        this.polled = reason;
        if (this.answer) this.explainAnswer(...this.answer);
      }),
    }, priority);
  }
}

const ARTICLE = "id title url source publishedAt sentiment { label score }";
const FEAR_GREED = "value classification at provider";

export class NewsPanel extends ListPanel {
  async load() {
    const response = await this.client.query(`query DashboardNews {
      news(first: ${LIST_LENGTH}) { edges { node { ${ARTICLE} } } } fearGreed { ${FEAR_GREED} } }`);
    const data = response.data || {};
    const articles = data.news ? data.news.edges.map((e) => e.node) : [];
    this.fill(this.list, articles, (a) => this.article(a));
    this.showFearGreed(data.fearGreed);
    this.explainAnswer(response, articles.length, ["NEWS"], "news");
  }

  article(a) {
    const label = a.sentiment ? a.sentiment.label : "unscored";
    return el(
      "li", {},
      el("a", { href: a.url, rel: "noopener noreferrer", target: "_blank", text: a.title }),
      el("small", {}, el("span", { class: "label", "data-label": label, text: label.toLowerCase() }), ` ${a.source} · ${ago(a.publishedAt)}`),
    );
  }

  showFearGreed(point) {
    const strong = this.panel.querySelector(".fng strong");
    strong.textContent = point ? `${point.value} (${point.classification}, ${ago(point.at)})` : "none collected yet";
    const line = this.panel.querySelector(".fng");
    line.title = this.fearGreedPolled ? `Not live (${this.fearGreedPolled}): reloaded every 10 min` : "";
  }

  subscribe() {
    this.follow(`subscription DashboardNewsLive { news { ${ARTICLE} } }`, {}, (a) => {
      this.prepend(this.list, a, (x) => this.article(x));
      note(this.panel, "");
    }, 3);
    // A daily figure: when the tier's subscriptions are spent, the 10-minute reload is enough.
    this.follow(`subscription DashboardFearGreed { fearGreed { ${FEAR_GREED} } }`, {}, (p) => this.showFearGreed(p), 8, (reason) => {
      this.fearGreedPolled = reason;
    });
  }
}

const HEAD = "chain blockNumber provider lagBlocks observedAt";
const GAS = "chain slowGwei standardGwei fastGwei unit provider observedAt";
const GAS_CHAINS = ["ethereum", "bitcoin"];

export class ChainsPanel extends ListPanel {
  constructor(client, panel, app) {
    super(client, panel, app);
    this.heads = panel.querySelector(".heads");
    this.gas = panel.querySelector(".gas");
    this.headRows = new Map();
    this.gasRows = new Map();
  }

  async load() {
    const gasFields = GAS_CHAINS.map((c, i) => `g${i}: gas(chain: "${c}") { ${GAS} }`).join(" ");
    const response = await this.client.query(`query DashboardChains { chainHeads { ${HEAD} } ${gasFields} }`);
    const data = response.data || {};
    for (const head of data.chainHeads || []) this.showHead(head);
    GAS_CHAINS.forEach((_, i) => data[`g${i}`] && this.showGas(data[`g${i}`]));
    const count = (data.chainHeads || []).length + GAS_CHAINS.filter((_, i) => data[`g${i}`]).length;
    this.explainAnswer(response, count, ["RPC", "EXPLORER"], "chain data");
  }

  showHead(h) {
    const row = el("li", { "data-chain": h.chain }, el("b", { text: `${h.chain} #${h.blockNumber.toLocaleString("en-US")}` }));
    row.title = `from ${h.provider}, ${h.lagBlocks} blocks behind, ${ago(h.observedAt)}`;
    this.replaceRow(this.heads, this.headRows, h.chain, row);
  }

  showGas(g) {
    const text = `${g.chain} gas: ${g.slowGwei} / ${g.standardGwei} / ${g.fastGwei} ${g.unit} (slow / standard / fast)`;
    this.replaceRow(this.gas, this.gasRows, g.chain, el("li", { title: `from ${g.provider}, ${ago(g.observedAt)}`, text }));
  }

  replaceRow(list, rows, key, row) {
    const old = rows.get(key);
    if (old) old.replaceWith(row);
    else list.append(row);
    rows.set(key, row);
  }

  subscribe() {
    this.follow(`subscription DashboardHeads { chainHeads { ${HEAD} } }`, {}, (h) => this.showHead(h), 5);
    // Ethereum's gas live; Bitcoin's fee tiers change slowly and come with each reload.
    const gas = `subscription DashboardGas($chain: String!) { gas(chain: $chain) { ${GAS} } }`;
    this.follow(gas, { chain: GAS_CHAINS[0] }, (g) => this.showGas(g), 6);
  }
}

const WHALE = "chain hash asset amount amountUsd at fromLabel toLabel removed provider";

export class WhalesPanel extends ListPanel {
  async load() {
    const response = await this.client.query(`query DashboardWhales {
      whaleTransactions(limit: ${LIST_LENGTH}) { ${WHALE} } }`);
    const items = (response.data && response.data.whaleTransactions) || [];
    this.fill(this.list, items, (w) => this.row(w));
    this.explainAnswer(response, items.length, ["WHALE_TRACKING", "RPC"], "whale transaction in the last 24 h");
  }

  row(w) {
    const who = `${w.fromLabel || w.chain} → ${w.toLabel || "unlabelled"}`;
    const what = `${compact(w.amount)} ${w.asset} ($${compact(w.amountUsd)})${w.removed ? " — withdrawn by a reorg" : ""}`;
    return el("li", { title: w.hash }, el("b", { text: what }), el("small", { text: `${who} · ${w.chain} · ${ago(w.at)}` }));
  }

  subscribe() {
    this.follow(`subscription DashboardWhalesLive { whaleTransactions { ${WHALE} } }`, {}, (w) => {
      this.prepend(this.list, w, (x) => this.row(x));
      note(this.panel, "");
    }, 7);
  }
}

const ALERT = "id severity kind message provider at acknowledged";

export class AlertsPanel extends ListPanel {
  async load() {
    const query = `query DashboardAlerts { alerts(unacknowledgedOnly: true) { ${ALERT} } }`;
    const response = await this.client.query(query);
    const items = (response.data && response.data.alerts) || [];
    this.fill(this.list, items, (a) => this.row(a));
    if (!response.errors && !items.length) note(this.panel, "No unacknowledged alert.");
    else this.explainAnswer(response, items.length, [], "alert");
  }

  row(a) {
    return el(
      "li", {},
      el("b", { class: `sev-${a.severity}`, text: `${a.severity} · ${a.kind}${a.provider ? ` · ${a.provider}` : ""}` }),
      el("small", { text: `${a.message} · ${ago(a.at)}${a.acknowledged ? " · acknowledged" : ""}` }),
    );
  }

  subscribe() {
    this.follow(`subscription DashboardAlertsLive { alerts { ${ALERT} } }`, {}, (a) => {
      this.prepend(this.list, a, (x) => this.row(x));
      note(this.panel, "");
    }, 4);
  }
}
