// The prices table (latest consensus, a day of 15-minute closes as a sparkline, live ticks) and
// the candle chart (ohlcv for the first paint, the `candles` subscription after).
//
// Live ticks come from `priceTicks`; after a dropped socket the subscription is sent again with
// `since:` a little before the newest tick seen, so the gateway replays what was missed, and
// ticks already shown are recognised (symbol, provider, observedAt) and skipped.

import { CandlestickSeries, createChart } from "./lightweight-charts.standalone.production.mjs";
import { explain, warnings } from "./gql.js";
import { ago, el, note, usd, whyEmpty } from "./view.js";

const PRICES = `query DashboardPrices($symbols: [String!]!) {
  prices(symbols: $symbols) { symbol usd provider sources observedAt change24hPct }
}`;
const TICKS = `subscription DashboardTicks($symbols: [String!]!, $since: DateTime) {
  priceTicks(symbols: $symbols, since: $since) { symbol usd provider observedAt }
}`;
const OHLCV = `query DashboardCandles($symbol: String!, $interval: Interval!) {
  ohlcv(symbol: $symbol, interval: $interval, limit: 120) { openTime open high low close }
}`;
const CANDLES = `subscription DashboardCandle($symbol: String!, $interval: Interval!) {
  candles(symbol: $symbol, interval: $interval) { openTime open high low close }
}`;
const REPLAY_MARGIN_MS = 5000; // ask for a little more than missed; duplicates are skipped
const SEEN_LIMIT = 5000; // tick keys remembered for skipping duplicates
const TICK_LOG = 1000; // ticks kept in window.gatewayDashboard.ticks (diagnostics)
const SPARK_POINTS = 120;

export class PricesPanel {
  constructor(client, panel, app) {
    this.client = client;
    this.panel = panel;
    this.app = app;
    this.rows = new Map();
    for (const tr of panel.querySelectorAll("tr[data-symbol]")) {
      this.rows.set(tr.dataset.symbol, { tr, points: [], observedAt: 0, sources: [], provider: "" });
    }
    this.symbols = [...this.rows.keys()];
    this.newest = 0;
    this.seen = new Set();
    this.seenOrder = [];
    this.complete = false;
    this.polled = null;
    this.empty = null; // the providers-based reason shown when no price came back
    window.gatewayDashboard.ticks = [];
  }

  async load() {
    const response = await this.client.query(PRICES, { symbols: this.symbols });
    const prices = response.data ? response.data.prices : null;
    if (!prices) {
      this.complete = false;
      note(this.panel, `No prices: ${explain(response.errors || [])}`, "error");
      return;
    }
    for (const price of prices) {
      const row = this.rows.get(price.symbol);
      if (!row) continue;
      row.sources = price.sources;
      this.show(row, price.usd, price.provider, Date.parse(price.observedAt));
    }
    this.tickAges(); // "no price yet" on the rows left out
    const told = warnings(response);
    this.complete = prices.length === this.symbols.length;
    this.empty = prices.length === 0 && !told.length;
    if (told.length) note(this.panel, told.join("; "), "warn");
    else if (this.empty) this.reexplain();
    else note(this.panel, this.polled ? `Not live: ${this.polled}` : "", this.polled ? "warn" : "");
  }

  /** Explain an empty answer again, now that the provider list is known. */
  reexplain() {
    if (this.empty) note(this.panel, whyEmpty(this.app.providers, ["MARKET_DATA"], "price"), "warn");
  }

  /** A day of 15-minute closes for every symbol, in one request (aliases h0, h1, …). */
  async loadHistory() {
    const args = this.symbols.map((_, i) => `$s${i}: String!`).join(", ");
    const fields = this.symbols.map((_, i) => `h${i}: priceHistory(symbol: $s${i}, interval: M15) { close }`);
    const variables = Object.fromEntries(this.symbols.map((symbol, i) => [`s${i}`, symbol]));
    const response = await this.client.query(`query DashboardHistory(${args}) { ${fields.join(" ")} }`, variables);
    if (!response.data) return; // the price column and the note say why
    this.symbols.forEach((symbol, i) => {
      const row = this.rows.get(symbol);
      const closes = (response.data[`h${i}`] || []).map((c) => c.close);
      row.points = closes.concat(row.points).slice(-SPARK_POINTS);
      this.drawSpark(row);
    });
  }

  subscribe() {
    this.client.subscribe(
      TICKS,
      () => ({
        symbols: this.symbols,
        since: this.newest ? new Date(this.newest - REPLAY_MARGIN_MS).toISOString() : null,
      }),
      {
        next: (payload) => {
          if (payload.data && payload.data.priceTicks) this.onTick(payload.data.priceTicks);
          else if (payload.errors) note(this.panel, `Live prices: ${explain(payload.errors)}`, "error");
        },
        error: (errors) => note(this.panel, `Live prices stopped: ${explain(errors)}`, "error"),
        unavailable: (reason) => {
          this.polled = reason;
          note(this.panel, `Not live: ${reason}`, "warn");
        },
      },
      1,
    );
  }

  onTick(tick) {
    const key = `${tick.symbol}|${tick.provider}|${tick.observedAt}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.seenOrder.push(key);
    if (this.seenOrder.length > SEEN_LIMIT) this.seen.delete(this.seenOrder.shift());
    const log = window.gatewayDashboard.ticks;
    log.push(tick);
    if (log.length > TICK_LOG) log.shift();
    const at = Date.parse(tick.observedAt);
    this.newest = Math.max(this.newest, at);
    const row = this.rows.get(tick.symbol);
    if (!row || at < row.observedAt) return; // a replayed older tick: the row shows newer
    row.points.push(tick.usd);
    if (row.points.length > SPARK_POINTS) row.points.shift();
    this.show(row, tick.usd, tick.provider, at);
    this.drawSpark(row);
  }

  show(row, value, provider, at) {
    if (at < row.observedAt) return;
    row.observedAt = at;
    row.provider = provider;
    row.tr.dataset.usd = String(value);
    row.tr.querySelector(".price").textContent = `$${usd(value)}`;
    this.age(row);
  }

  age(row) {
    if (!row.observedAt) {
      row.tr.querySelector(".meta").textContent = "no price yet";
      return;
    }
    const sources = row.sources.length ? row.sources.join(", ") : row.provider;
    row.tr.querySelector(".meta").textContent = `${sources} · ${ago(new Date(row.observedAt).toISOString())}`;
  }

  tickAges() {
    for (const row of this.rows.values()) this.age(row);
  }

  drawSpark(row) {
    const cell = row.tr.querySelector(".spark");
    const points = row.points;
    if (points.length < 2) return;
    const low = Math.min(...points);
    const span = Math.max(...points) - low || 1;
    const coords = points
      .map((p, i) => `${((i / (points.length - 1)) * 100).toFixed(2)},${(24 - ((p - low) / span) * 22).toFixed(2)}`)
      .join(" ");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 100 26");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", coords);
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
    cell.replaceChildren(svg);
  }
}

const toBar = (c) => ({ time: Date.parse(c.openTime) / 1000, open: c.open, high: c.high, low: c.low, close: c.close });

export class CandleChart {
  constructor(client, panel, app) {
    this.client = client;
    this.panel = panel;
    this.app = app;
    this.symbol = panel.querySelector("#candle-symbol");
    this.interval = panel.querySelector("#candle-interval");
    this.chart = createChart(panel.querySelector(".chart"), {
      autoSize: true,
      layout: { background: { color: "#ffffff" }, textColor: "#1b1f24" },
      grid: { vertLines: { color: "#eef0f2" }, horzLines: { color: "#eef0f2" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    this.series = this.chart.addSeries(CandlestickSeries, {
      upColor: "#1a7f37", borderUpColor: "#1a7f37", wickUpColor: "#1a7f37",
      downColor: "#b42318", borderDownColor: "#b42318", wickDownColor: "#b42318",
    });
    this.stop = null;
    this.last = 0;
    this.generation = 0;
    for (const select of [this.symbol, this.interval]) select.addEventListener("change", () => this.load());
  }

  async load() {
    const generation = ++this.generation;
    if (this.stop) this.stop();
    this.stop = null;
    const variables = { symbol: this.symbol.value, interval: this.interval.value };
    const label = this.panel.querySelector(".chart");
    label.setAttribute("aria-label", `Candle chart of ${variables.symbol}, ${this.interval.selectedOptions[0].text} candles`);
    note(this.panel, `Loading ${variables.symbol} candles…`);
    const response = await this.client.query(OHLCV, variables);
    if (generation !== this.generation) return; // the choice changed meanwhile
    const candles = response.data ? response.data.ohlcv : null;
    const bars = (candles || []).map(toBar).sort((a, b) => a.time - b.time);
    this.series.setData(bars);
    this.last = bars.length ? bars[bars.length - 1].time : 0;
    if (!candles) note(this.panel, `No candles: ${explain(response.errors || [])}`, "error");
    else if (!bars.length) {
      const why = whyEmpty(this.app.providers, ["MARKET_DATA"], `${variables.symbol} candle`);
      note(this.panel, why, "warn");
    } else note(this.panel, `${variables.symbol}: ${bars.length} candles, live`);
    if (bars.length) this.chart.timeScale().fitContent();
    this.stop = this.client.subscribe(CANDLES, () => variables, {
      next: (payload) => {
        if (!payload.data || generation !== this.generation) return;
        const bar = toBar(payload.data.candles);
        if (bar.time < this.last) return;
        this.last = bar.time;
        this.series.update(bar);
        if (this.panel.querySelector(".note").dataset.kind) note(this.panel, `${variables.symbol}: live`);
      },
      error: (errors) => note(this.panel, `Live candles stopped: ${explain(errors)}`, "error"),
      unavailable: (reason) => note(this.panel, `${variables.symbol}: not live (${reason})`, "warn"),
    }, 2);
  }
}
