// The dashboard's entry module: wires the panels to one GatewayClient, runs the first paint
// (one query per panel, in parallel once the provider list is known, so an empty panel can say
// why), then the subscriptions, and a slow refresh of what subscriptions do not cover (the
// consensus sources, provider details, the reasons of empty panels).
//
// The API key is typed by the user, kept in sessionStorage (this tab only) and sent only in
// headers and the WebSocket connection_init payload: never in a URL, never kept across tabs.

import { GatewayClient } from "./gql.js";
import { AlertsPanel, ChainsPanel, NewsPanel, ProvidersPanel, WhalesPanel } from "./panels.js";
import { CandleChart, PricesPanel } from "./prices.js";

const KEY_STORAGE = "gateway.apiKey";
// Reloads cost requests, and a tier counts them (the free tier: 30 a minute, 1,000 a day), so
// what subscriptions cover is never polled: the rest is reloaded every 10 minutes, and missing
// prices are asked for again after 3 s, then less and less often.
const POLL_MS = 10 * 60 * 1000;
const FIRST_RETRY_MS = 3000;

// Diagnostics for people and tests: when the first paint finished, the ticks received.
window.gatewayDashboard = { firstPaintMs: null, ticks: [] };

const app = { providers: null };
const connection = document.getElementById("connection");
const client = new GatewayClient((state, text) => {
  connection.dataset.state = state;
  connection.textContent = text;
});
client.key = sessionStorage.getItem(KEY_STORAGE) || "";

const byId = (id) => document.getElementById(id);
const providers = new ProvidersPanel(client, byId("providers"), app);
const prices = new PricesPanel(client, byId("prices"), app);
const chart = new CandleChart(client, byId("candles"), app);
const lists = [
  new NewsPanel(client, byId("news"), app),
  new ChainsPanel(client, byId("chains"), app),
  new WhalesPanel(client, byId("whales"), app),
  new AlertsPanel(client, byId("alerts"), app),
];

async function firstPaint() {
  // Every panel at once; those left empty explain why again once the provider list is known.
  await Promise.all([
    providers.load(), prices.load(), chart.load(), ...lists.map((panel) => panel.load()),
  ]);
  prices.reexplain();
  for (const panel of lists) panel.reexplain();
}

let priceRetry = FIRST_RETRY_MS;
function pollPrices() {
  const delay = prices.complete ? POLL_MS : priceRetry;
  priceRetry = Math.min(POLL_MS, priceRetry * 2);
  setTimeout(async () => {
    await prices.load();
    if (!prices.complete) {
      await providers.load(); // the reason may be theirs (offline, unconfigured)
      prices.reexplain();
    } else priceRetry = FIRST_RETRY_MS;
    pollPrices();
  }, delay);
}

function pollTheRest() {
  setInterval(() => {
    providers.load();
    for (const panel of lists) if (panel.polled || panel.fearGreedPolled || panel.answer === null || !panel.answer[1]) panel.load();
  }, POLL_MS);
}

function keyForm() {
  const form = byId("key-form");
  const input = byId("api-key");
  const help = byId("key-help");
  const shown = () => {
    input.placeholder = client.key ? "a key is in use (this tab)" : "only if this gateway requires one";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault(); // a GET form would put the key in the URL
    const key = input.value.trim();
    input.value = "";
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    client.setKey(key);
    help.textContent = key ? "Key in use: sent as a header, kept in this tab only." : "No key in use.";
    shown();
    firstPaint();
  });
  byId("key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    client.setKey("");
    help.textContent = "Key forgotten.";
    shown();
    firstPaint();
  });
  shown();
}

keyForm();
client.start();
firstPaint().then(() => {
  window.gatewayDashboard.firstPaintMs = performance.now();
  performance.mark("dashboard-first-paint");
  providers.subscribe();
  prices.subscribe();
  for (const panel of lists) panel.subscribe();
  prices.loadHistory();
  setInterval(() => prices.tickAges(), 1000);
  pollPrices();
  pollTheRest();
});
