// regionguard's client for Node.js (kafkajs): keys, partitions, events, atomic write groups
// (docs/clients.md; docs/contract.md). kafkajs is unmaintained, but the maintained
// @confluentinc/kafka-javascript cannot be installed where this project builds: its npm install
// fetches a prebuilt librdkafka from GitHub, then builds librdkafka from sources it also downloads
// (zlib, OpenSSL, zstd, curl) - docs/clients.md, "Why kafkajs".
//
//   const { Kafka } = require("kafkajs");
//   const { RegionGuardProducer } = require("@regionguard/client");
//   const kafka = new Kafka({ brokers: ["127.0.0.1:9092"], requestTimeout: REQUEST_TIMEOUT_MS });
//   const p = new RegionGuardProducer(kafka, "rg.");         // acks=all, Java's murmur2 partitioner
//   await p.connect();
//   await p.write("us-east-1", "users", "upsert", { id: 42 }, { name: "Ada", version: 7 });
//   // an atomic write group: ONE record keyed by its ordering key; the router applies the ops in
//   // one transaction, in order, all or nothing (DESIGN.md, "Atomic write groups and ordering keys")
//   await p.group("us-east-1", { orderingKey: "customer/42" }, (g) => {
//     g.insert("orders", { id: 7 }, { user_id: 42, amount: 30 });
//     g.insert("order_items", { order_id: 7, line: 1 }, { sku: "A1", qty: 2 });
//   });
//   await p.disconnect();
const crypto = require("crypto");
const { KafkaJSProtocolError, Partitioners } = require("kafkajs");

const MAX_GROUP_OPS = 1000;

// `<table>/<key values in sorted column order, joined by "/">`. Integers beyond 2^53 lose digits in
// JSON.parse: send such key values as strings.
const kafkaKey = (table, key) => [table, ...Object.keys(key).sort().map((k) => String(key[k]))].join("/");

const checkOrderingKey = (orderingKey) => {
  if (typeof orderingKey !== "string" || orderingKey === "") throw new Error("ordering_key must be a non-empty string");
  return orderingKey;
};

// A single-row WriteEvent (policy hold, fresh UUID id); `orderingKey` (optional) becomes its Kafka key.
const writeEvent = (region, { table, op, key, data }, { orderingKey, policy = "hold", fallbackRegions = [] } = {}) => ({
  id: crypto.randomUUID(), region, table, op, key, ...(data == null ? {} : { data }),
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
  return { id: crypto.randomUUID(), region, ordering_key: checkOrderingKey(orderingKey), ops: g.ops,
           policy, fallback_regions: fallbackRegions, created_at: new Date().toISOString() };
};

// The record's Kafka key: the ordering key when the event has one, else the row's.
const recordKey = (event) => (event.ordering_key != null ? event.ordering_key : kafkaKey(event.table, event.key));

// The partition of a keyed record among `partitions`: (murmur2(key) & 0x7fffffff) % partitions, Java's
// default, as the producer's partitioner (kafkajs' DefaultPartitioner) picks it; no broker needed.
const partition = (key, partitions) => {
  if (!Number.isInteger(partitions) || partitions < 1) throw new Error(`partitions must be at least 1, got ${partitions}`);
  const partitionMetadata = Array.from({ length: partitions }, (_, i) => ({ partitionId: i, leader: 0 }));
  return Partitioners.DefaultPartitioner()({ topic: "t", partitionMetadata, message: { key } });
};

const message = (event) => ({ key: recordKey(event), value: JSON.stringify(event) });

// How long Kafka has to acknowledge a write before the send rejects with WriteNotAcknowledgedError
// (docs/producers.md, "When brokers fail": the same in every language). It rides out a leader move
// (the broker session timeout, 9 s by default, then an election); kafkajs has no delivery timeout
// of its own, and its idempotent producer retries forever, so a dead region never failed a send.
const DELIVERY_TIMEOUT_MS = 30000;
// Give the Kafka client `requestTimeout: REQUEST_TIMEOUT_MS`: a request to a leader gone silent is
// then retried to the new leader in time (kafkajs' default waits 30 s).
const REQUEST_TIMEOUT_MS = 10000;

// Kafka did not acknowledge these writes: their region's brokers are gone, the delivery timeout
// passed, or the broker refused them. `retriable` comes from kafkajs' error types, never its text:
// send the same events again (same ids: the inbox applies each once). kafkajs cannot cancel a send,
// so until `disconnect()` it may still deliver them: a write reported here may still be applied.
class WriteNotAcknowledgedError extends Error {
  constructor(region, topic, ids, cause, deliveryTimeoutMs) {
    const why = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super(`${ids.length} write(s) to region ${region} (topic ${topic}) not acknowledged ` +
          `(delivery timeout ${deliveryTimeoutMs / 1000} s): ${why}`.replace(/\s+/g, " "));
    this.name = "WriteNotAcknowledgedError";
    this.region = region;
    this.topic = topic;
    this.ids = ids;
    this.cause = cause;
    // a refusal the broker would repeat (too large, invalid) is not retriable; timeouts and lost brokers are
    this.retriable = !(cause instanceof KafkaJSProtocolError && cause.retriable === false);
  }
}

class DeliveryTimeout extends Error {
  constructor() { super("no acknowledgement"); this.name = "DeliveryTimeout"; }
}

class RegionGuardProducer {
  // `idempotent: false` for brokers without InitProducerId (tansu); the event id still makes a duplicate harmless.
  constructor(kafka, topicPrefix, { idempotent = true, deliveryTimeoutMs = DELIVERY_TIMEOUT_MS } = {}) {
    this.prefix = topicPrefix;
    this.deliveryTimeoutMs = deliveryTimeoutMs;
    // DefaultPartitioner is Java's murmur2 partitioner, the contract's. Retries stay unlimited (kafkajs'
    // idempotent default; limiting them desynchronises its sequence numbers) but at most 1 s apart, so a
    // moved leader is found at once; the delivery timeout bounds the wait. One request in flight keeps order.
    // metadataMaxAge 3 s: kafkajs refreshes metadata after a lost connection but not after a request
    // timeout, so with its 5-minute default it kept sending to a leader that went silent (a region cut
    // off) long after the leader had moved; a send attempt refreshes metadata older than this.
    this.producer = kafka.producer({ idempotent, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner,
                                     metadataMaxAge: 3000,
                                     retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: Number.MAX_SAFE_INTEGER } });
  }
  topic(region) { return `${this.prefix}writes.${region}`; }
  // Optional: a send connects first if need be (a failed connect is tried again by the next send).
  connect() {
    if (!this.connecting) {
      this.connecting = this.producer.connect().catch((err) => { this.connecting = null; throw err; });
    }
    return this.connecting;
  }
  disconnect() { this.connecting = null; return this.producer.disconnect(); }
  // Publishes events in order, acknowledged (acks=all) once it resolves; rejects with
  // WriteNotAcknowledgedError (at the latest after the delivery timeout) otherwise.
  async sendEvents(region, events) {
    const topic = this.topic(region);
    let timer;
    const deadline = new Promise((_, reject) => { timer = setTimeout(() => reject(new DeliveryTimeout()), this.deliveryTimeoutMs); });
    try {
      const send = this.connect().then(() => this.producer.send({ topic, acks: -1, messages: events.map(message) }));
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
