// The dashboard's only way to the gateway: GraphQL queries over POST /graphql, subscriptions
// over one graphql-transport-ws socket on /graphql. The API key goes in the Authorization
// header and the connection_init payload, never in a URL. A dropped socket is reopened with
// doubling backoff (0.5 s up to 10 s) and every subscription is sent again with fresh
// variables (priceTicks asks for what it missed with `since:`). Every wait is bounded.
//
// A tier may cap the subscriptions open at once (the free tier: 5). Subscriptions carry a
// priority; once the gateway refuses one as over that cap (RATE_LIMITED, limit "subscriptions")
// the client remembers the cap (per key) and from then on sends only that many, best first,
// telling the others' sinks `unavailable(reason)` so their panels can say so and poll instead.

const ENDPOINT = "/graphql";
const QUERY_TIMEOUT_MS = 10000;
const ACK_TIMEOUT_MS = 5000;
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10000;
const PROTOCOL = "graphql-transport-ws";

// Close codes the gateway sends (gateway/api/ws/protocols.py, gateway/api/auth), in words.
const CLOSE_REASONS = {
  1001: "the gateway is restarting",
  1006: "the connection dropped",
  1013: "the gateway has too many connections",
  4401: "this gateway needs a valid API key",
  4403: "this API key may not subscribe",
  4408: "the connection timed out",
  4413: "this page fell behind the live data",
  4429: "too many requests from this address",
};

/** One error, in the shape a GraphQL response carries it, for failures outside GraphQL. */
export function failure(message, code) {
  return { message, extensions: { code } };
}

export class GatewayClient {
  /** `onState(state, text)`: state is "connecting", "live" or "down". */
  constructor(onState) {
    this.onState = onState;
    this.key = "";
    this.subs = new Set();
    this.byId = new Map();
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.nextId = 1;
    this.flushing = false;
    // Per key ("" for none): how many subscriptions the gateway lets it open at once, and its words.
    this.caps = new Map();
  }

  setKey(key) {
    this.key = key;
    this.reconnectNow();
  }

  headers() {
    const headers = {
      "content-type": "application/json",
      accept: "application/graphql-response+json, application/json",
    };
    if (this.key) headers.authorization = `Bearer ${this.key}`;
    return headers;
  }

  /** The decoded response ({data, errors, extensions}); transport failures become errors. */
  async query(query, variables = {}) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), QUERY_TIMEOUT_MS);
    try {
      const response = await fetch(ENDPOINT, {
        method: "POST", headers: this.headers(), cache: "no-store", signal: abort.signal,
        body: JSON.stringify({ query, variables }),
      });
      try {
        return await response.json();
      } catch {
        return { errors: [failure(`the gateway answered HTTP ${response.status}`, `HTTP_${response.status}`)] };
      }
    } catch (error) {
      const why = abort.signal.aborted ? "did not answer within 10 s" : "cannot be reached";
      return { errors: [failure(`the gateway ${why} (${error.message})`, "NETWORK")] };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Subscribe; `variables()` is asked again at each (re)subscription; `sink` has next(payload),
   * error(errors) and unavailable(reason); `priority` 0 is the most wanted. Returns a stop function.
   */
  subscribe(query, variables, sink, priority) {
    const sub = { query, variables, sink, priority, id: null, parked: false };
    this.subs.add(sub);
    // Sent together with any other subscribed in the same turn, best first (see `flush`).
    if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(() => {
        this.flushing = false;
        this.flush();
      });
    }
    return () => {
      this.subs.delete(sub);
      if (sub.id !== null) {
        this.byId.delete(sub.id);
        this.write({ id: sub.id, type: "complete" });
      }
    };
  }

  start() {
    this.connect();
    window.addEventListener("online", () => this.reconnectNow());
  }

  reconnectNow() {
    this.attempt = 0;
    const socket = this.socket;
    this.socket = null;
    this.forgetIds();
    if (socket) socket.close(1000, "new key");
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    const url = new URL(ENDPOINT, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(url, PROTOCOL);
    } catch (error) {
      this.retry(`cannot open the live connection (${error.message})`);
      return;
    }
    socket.acked = false;
    this.socket = socket;
    this.onState("connecting", "Connecting to live updates…");
    const ackTimer = setTimeout(() => socket.close(4408, "no connection_ack"), ACK_TIMEOUT_MS);
    socket.onopen = () => {
      const payload = this.key ? { Authorization: `Bearer ${this.key}` } : {};
      socket.send(JSON.stringify({ type: "connection_init", payload }));
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "connection_ack") clearTimeout(ackTimer);
      if (this.socket === socket) this.handle(socket, message);
    };
    socket.onclose = (event) => {
      clearTimeout(ackTimer);
      if (this.socket !== socket) return;
      this.socket = null;
      this.forgetIds();
      const why = event.reason || CLOSE_REASONS[event.code] || `closed (code ${event.code})`;
      if (event.code === 4401 || event.code === 4403) {
        // The same key would be refused again: wait for another one (setKey reconnects).
        this.onState("down", `Live updates refused: ${why}. Enter an API key above`);
        return;
      }
      this.retry(why);
    };
  }

  handle(socket, message) {
    const sub = this.byId.get(message.id);
    switch (message.type) {
      case "connection_ack":
        socket.acked = true;
        this.attempt = 0;
        this.onState("live", "Live");
        this.flush();
        break;
      case "ping":
        this.write({ type: "pong" });
        break;
      case "next":
        if (sub) sub.sink.next(message.payload);
        break;
      case "error":
        if (sub) {
          this.byId.delete(sub.id);
          sub.id = null;
          sub.parked = true; // not sent again before the next connection
          const errors = Array.isArray(message.payload) ? message.payload : [message.payload];
          const ext = (errors[0] && errors[0].extensions) || {};
          if (ext.code === "RATE_LIMITED" && ext.limit === "subscriptions") {
            const maximum = typeof ext.maximum === "number" ? ext.maximum : 0;
            this.caps.set(this.key, { maximum, reason: errors[0].message });
            sub.sink.unavailable(errors[0].message);
          } else sub.sink.error(errors);
        }
        break;
      case "complete":
        if (sub) {
          this.byId.delete(sub.id);
          sub.id = null;
        }
        break;
      default:
        break;
    }
  }

  /** Send every waiting subscription, best first, as far as the known cap allows. */
  flush() {
    if (!this.socket || !this.socket.acked) return; // the ack flushes
    const cap = this.caps.get(this.key);
    let open = [...this.subs].filter((s) => s.id !== null).length;
    for (const sub of [...this.subs].sort((a, b) => a.priority - b.priority)) {
      if (sub.id !== null || sub.parked) continue;
      if (!cap || open < cap.maximum) {
        this.send(sub);
        open += 1;
      } else {
        sub.parked = true;
        sub.sink.unavailable(cap.reason);
      }
    }
  }

  send(sub) {
    sub.id = String(this.nextId++);
    this.byId.set(sub.id, sub);
    this.write({ id: sub.id, type: "subscribe", payload: { query: sub.query, variables: sub.variables() } });
  }

  write(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  forgetIds() {
    this.byId.clear();
    for (const sub of this.subs) {
      sub.id = null;
      sub.parked = false; // a new connection: the cap decides again
    }
  }

  retry(why) {
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this.attempt);
    this.attempt += 1;
    const seconds = (delay / 1000).toFixed(delay < 1000 ? 1 : 0);
    this.onState("down", `Live updates stopped: ${why}. Retrying in ${seconds} s`);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

/** "message (CODE)" for each error, joined: what a panel shows when the API refused. */
export function explain(errors) {
  return errors
    .map((error) => {
      const code = error.extensions && error.extensions.code;
      return code ? `${error.message} (${code})` : error.message;
    })
    .join("; ");
}

/** The warnings the gateway put in a response's extensions, as "message (CODE)". */
export function warnings(response) {
  const list = (response.extensions && response.extensions.warnings) || [];
  return list.map((w) => (w.code ? `${w.message} (${w.code})` : String(w.message || w)));
}
