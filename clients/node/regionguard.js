// regionguard's client for Node.js (@platformatic/kafka): keys, partitions, events, atomic write groups
// (docs/clients.md; docs/contract.md). @platformatic/kafka is maintained and pure JavaScript; it needs
// Node.js 22.22 or newer (docs/clients.md, "Why @platformatic/kafka"). What is written here by hand is
// ours: the contract's key and partition rule, the events, and the delivery timeout the library lacks.
//
//   const { RegionGuardProducer } = require("@regionguard/client");
//   const p = new RegionGuardProducer("127.0.0.1:9092", "rg.");   // acks=all, idempotent, Java's murmur2
//   await p.write("us-east-1", "users", "upsert", { id: 42 }, { name: "Ada", version: 7 });
//   // an atomic write group: ONE record keyed by its ordering key; the router applies the ops in
//   // one transaction, in order, all or nothing (docs/contract.md, "Atomic write groups and ordering keys")
//   await p.group("us-east-1", { orderingKey: "customer/42" }, (g) => {
//     g.insert("orders", { id: 7 }, { user_id: 42, amount: 30 });
//     g.insert("order_items", { order_id: 7, line: 1 }, { sku: "A1", qty: 2 });
//   });
//   await p.disconnect();
// uuid's v7 (RFC 9562): the Unix time in ms first, then a counter within the ms, so ids made in
// sequence sort in creation order and the inbox's primary key (regionguard_applied.write_id) grows at
// one end instead of taking each claim on a random page of its index (bench/inbox_ids.py: about twice
// the claims on a large inbox). Any UUID an app sets as `id` instead is accepted.
const { v7: newWriteId } = require("uuid");
const { Producer, ProduceAcks, murmur2, ProtocolError, UserError, AuthenticationError, UnsupportedApiError,
        UnsupportedError, UnsupportedFormatError, UnsupportedCompressionError } = require("@platformatic/kafka");

const MAX_GROUP_OPS = 1000;

// `<table>/<key values in sorted column order, joined by "/">`. Integers beyond 2^53 lose digits in
// JSON.parse: send such key values as strings.
const kafkaKey = (table, key) => [table, ...Object.keys(key).sort().map((k) => String(key[k]))].join("/");

const checkOrderingKey = (orderingKey) => {
  if (typeof orderingKey !== "string" || orderingKey === "") throw new Error("ordering_key must be a non-empty string");
  return orderingKey;
};

// A single-row WriteEvent (policy hold, fresh UUIDv7 id); `orderingKey` (optional) becomes its Kafka key.
const writeEvent = (region, { table, op, key, data }, { orderingKey, policy = "hold", fallbackRegions = [] } = {}) => ({
  id: newWriteId(), region, table, op, key, ...(data == null ? {} : { data }),
  ...(orderingKey == null ? {} : { ordering_key: checkOrderingKey(orderingKey) }),
  policy, fallback_regions: fallbackRegions, created_at: new Date().toISOString(),
});

// Collects a group's row operations in the order they apply.
class GroupBuilder {
  constructor() { this.ops = []; }
  add(table, op, key, data) {
    if (this.ops.length >= MAX_GROUP_OPS) throw new Error(`a write group holds at most ${MAX_GROUP_OPS} ops`);
    this.ops.push({ table, op, key, ...(data == null ? {} : { data }) });
    return this;
  }
  insert(table, key, data) { return this.add(table, "insert", key, data); }
  upsert(table, key, data) { return this.add(table, "upsert", key, data); }
  update(table, key, data) { return this.add(table, "update", key, data); }
  delete(table, key) { return this.add(table, "delete", key); }
}

// The WriteEvent of an atomic group: `build(g)` adds its ops (g.insert/upsert/update/delete).
const groupEvent = (region, { orderingKey, policy = "hold", fallbackRegions = [] }, build) => {
  const g = new GroupBuilder();
  build(g);
  if (g.ops.length === 0) throw new Error("a write group needs at least one op");
  return { id: newWriteId(), region, ordering_key: checkOrderingKey(orderingKey), ops: g.ops,
           policy, fallback_regions: fallbackRegions, created_at: new Date().toISOString() };
};

// The record's Kafka key: the ordering key when the event has one, else the row's.
const recordKey = (event) => (event.ordering_key != null ? event.ordering_key : kafkaKey(event.table, event.key));

// Java's keyed-record hash, murmur2(key) & 0x7fffffff. @platformatic/kafka's default partitioner takes
// murmur2 >>> 0 instead, which puts about half the keys in another partition than Java's: the producer
// is given this one, and the library takes it modulo the topic's partitions.
const javaHash = (key) => murmur2(Buffer.isBuffer(key) ? key : Buffer.from(key, "utf8")) & 0x7fffffff;

// The partition of a keyed record among `partitions`, as the producer picks it; no broker needed.
const partition = (key, partitions) => {
  if (!Number.isInteger(partitions) || partitions < 1) throw new Error(`partitions must be at least 1, got ${partitions}`);
  return javaHash(key) % partitions;
};

const message = (event) => ({ key: recordKey(event), value: JSON.stringify(event) });

// How long Kafka has to acknowledge a write before the send rejects with WriteNotAcknowledgedError
// (docs/producers.md, "When brokers fail": the same in every language). It rides out a leader move
// (the broker session timeout, 9 s by default, then an election). @platformatic/kafka has no delivery
// timeout: it gives up after a number of retries, so the send is tried again here until this passes.
const DELIVERY_TIMEOUT_MS = 30000;
// A request to a leader gone silent (a region cut off) is given up after this and sent again, to the
// new leader once the metadata says so.
const REQUEST_TIMEOUT_MS = 10000;
// Between two tries of a send the library gave up on: long enough not to spin on a broker that is
// down, short enough that a moved leader is found soon.
const RESEND_DELAY_MS = 250;

// The errors the broker or the client would repeat (a record too large, a bad option, no such API):
// by the library's error types, never their text. Timeouts and lost connections are worth a new try.
const FINAL_ERRORS = [UserError, AuthenticationError, UnsupportedApiError, UnsupportedError, UnsupportedFormatError,
                      UnsupportedCompressionError];
const causes = (err) => [err, ...(Array.isArray(err?.errors) ? err.errors.flatMap(causes) : []),
                         ...(err?.cause instanceof Error ? causes(err.cause) : [])];
const isRetriable = (err) => !causes(err).some((e) => (e instanceof ProtocolError && e.canRetry === false)
                                                    || FINAL_ERRORS.some((type) => e instanceof type));
// One line: the error and its innermost cause (the library nests a retried request's errors).
const describe = (err) => {
  if (!(err instanceof Error)) return String(err);
  const all = causes(err);
  const last = all[all.length - 1];
  return (last === err ? `${err.name}: ${err.message}` : `${err.name}: ${err.message}; ${last.name}: ${last.message}`)
    .replace(/\s+/g, " ");
};

// Kafka did not acknowledge these writes: their region's brokers are gone, the delivery timeout
// passed, or the broker refused them. `retriable` comes from the cause's type, never its text: send
// the same events again (same ids: the inbox applies each once). A send cannot be taken back, so a
// write reported here may still have reached Kafka.
class WriteNotAcknowledgedError extends Error {
  constructor(region, topic, ids, cause, deliveryTimeoutMs) {
    super(`${ids.length} write(s) to region ${region} (topic ${topic}) not acknowledged ` +
          `(delivery timeout ${deliveryTimeoutMs / 1000} s): ${describe(cause)}`);
    this.name = "WriteNotAcknowledgedError";
    this.region = region;
    this.topic = topic;
    this.ids = ids;
    this.cause = cause;
    this.retriable = isRetriable(cause);
  }
}

const STUCK = Symbol("stuck");

class AttemptTimeout extends Error {
  constructor(ms) { super(`no answer to one try within ${ms / 1000} s`); this.name = "AttemptTimeout"; }
}

class DeliveryTimeout extends Error {
  constructor(last) {
    super(last ? `no acknowledgement; last try: ${describe(last)}` : "no acknowledgement");
    this.name = "DeliveryTimeout";
  }
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// The Producer's options: `brokers` is "host:port,..." or an array of them, or @platformatic/kafka's
// own options ({ bootstrapBrokers, tls, sasl, ... }), which may change the rest but not acks,
// idempotence nor the partitioner, the contract's.
const producerOptions = (brokers, idempotent) => {
  const own = typeof brokers === "string" || Array.isArray(brokers)
    ? { bootstrapBrokers: typeof brokers === "string" ? brokers.split(",") : brokers } : brokers;
  return {
    clientId: "regionguard-node",
    // requestTimeout is how long the client waits for an answer (its default, 30 s, is the whole delivery
    // timeout: behind a frozen leader no write was ever tried again); timeout is the broker's own wait
    requestTimeout: REQUEST_TIMEOUT_MS, timeout: REQUEST_TIMEOUT_MS,
    // no tries of the library's own: after a failed request it asked the same (first) bootstrap broker
    // for metadata again, and with that broker frozen no write behind it got through within 30 s
    retries: 0,
    metadataMaxAge: 3000,                     // a leader that moved is looked up again soon
    maxInflights: 1,                          // writes sent one after another, even not awaited, keep their order
    ...own,
    idempotent, acks: ProduceAcks.ALL, partitioner: (_message, key) => javaHash(key),
  };
};

class RegionGuardProducer {
  // `idempotent: false` for brokers without InitProducerId (tansu); the event id still makes a duplicate harmless.
  constructor(brokers, topicPrefix, { idempotent = true, deliveryTimeoutMs = DELIVERY_TIMEOUT_MS } = {}) {
    this.prefix = topicPrefix;
    this.deliveryTimeoutMs = deliveryTimeoutMs;
    this.options = producerOptions(brokers, idempotent);
    this.attemptTimeoutMs = REQUEST_TIMEOUT_MS;
    this.renewals = 0;
    this.bootstrap = this.options.bootstrapBrokers;  // the order the current client tries them in
    this.producer = new Producer(this.options);
  }
  // A failed send is tried again on a new client (new connections, a new producer id) whose bootstrap
  // list starts one broker further: a broker that stopped answering is then not the one asked where
  // the leaders are. The old client is closed; a send still on it fails and is tried again too.
  renew(failed) {
    if (this.producer !== failed) return;  // another send renewed it already
    this.renewals += 1;
    const all = this.options.bootstrapBrokers;
    const k = this.renewals % all.length;
    this.bootstrap = [...all.slice(k), ...all.slice(0, k)];
    this.producer = new Producer({ ...this.options, bootstrapBrokers: this.bootstrap });
    failed.close(true).catch(() => {});
  }
  topic(region) { return `${this.prefix}writes.${region}`; }
  // Optional: the first send connects (kept for the kafkajs-era API).
  async connect() {}
  // Closes the connections; a send still being tried fails.
  disconnect() { return this.producer.close(true); }
  // Tries the send until Kafka acknowledges it, the error is final, or `state.expired`.
  async sendUntilAcknowledged(messages, state) {
    for (;;) {
      const producer = this.producer;
      let timer;
      try {
        // a try the library neither answers nor fails within a request timeout is given up here:
        // behind a frozen leader a send hung past the delivery timeout although requestTimeout was set
        // (a timer that resolves, never rejects: nothing is left to reject unheard once the try is over)
        const stuck = new Promise((ok) => { timer = setTimeout(ok, this.attemptTimeoutMs, STUCK); });
        const send = producer.send({ messages });
        send.catch(() => {});  // once given up, its outcome is no one's
        const result = await Promise.race([send, stuck]);
        if (result === STUCK) throw new AttemptTimeout(this.attemptTimeoutMs);
        return result;
      } catch (err) {
        state.last = err;
        // a send on a client renewed meanwhile failed because it was closed: tried again whatever the error
        if (state.expired || (producer === this.producer && !isRetriable(err))) throw err;
        this.renew(producer);
        await sleep(RESEND_DELAY_MS);
        if (state.expired) throw err;
      } finally {
        clearTimeout(timer);
      }
    }
  }
  // Publishes events in order, acknowledged (acks=all) once it resolves; rejects with
  // WriteNotAcknowledgedError (at the latest after the delivery timeout) otherwise.
  async sendEvents(region, events) {
    const topic = this.topic(region);
    const messages = events.map((e) => {
      const m = message(e);
      return { topic, key: Buffer.from(m.key, "utf8"), value: Buffer.from(m.value, "utf8") };
    });
    const state = { expired: false, last: null };
    let timer;
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => { state.expired = true; reject(new DeliveryTimeout(state.last)); }, this.deliveryTimeoutMs);
    });
    try {
      const send = this.sendUntilAcknowledged(messages, state);
      send.catch(() => {});  // after the deadline its outcome is no one's: never an unhandled rejection
      await Promise.race([send, deadline]);
    } catch (err) {
      throw new WriteNotAcknowledgedError(region, topic, events.map((e) => e.id), err, this.deliveryTimeoutMs);
    } finally {
      clearTimeout(timer);
    }
    return events.map((e) => ({ id: e.id, region: e.region }));
  }
  async write(region, table, op, key, data, options = {}) {
    return (await this.sendEvents(region, [writeEvent(region, { table, op, key, data }, options)]))[0];
  }
  // One record, once `build` has added the ops; resolves to the write token {id, region} once acknowledged.
  async group(region, options, build) {
    return (await this.sendEvents(region, [groupEvent(region, options, build)]))[0];
  }
}

module.exports = { MAX_GROUP_OPS, DELIVERY_TIMEOUT_MS, REQUEST_TIMEOUT_MS, kafkaKey, partition, writeEvent, groupEvent,
                   recordKey, message, GroupBuilder, RegionGuardProducer, WriteNotAcknowledgedError };
