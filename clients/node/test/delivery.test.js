// The delivery timeout and the typed error of a write Kafka did not acknowledge (docs/producers.md,
// "When brokers fail"); against real brokers: tests/integration/test_producer_failover.py.
const test = require("node:test");
const assert = require("node:assert");
const { KafkaJSConnectionError, KafkaJSProtocolError } = require("kafkajs");
const { DELIVERY_TIMEOUT_MS, RegionGuardProducer, WriteNotAcknowledgedError } = require("../regionguard");

// A kafkajs stand-in: send() never settles, as with brokers that went silent; or fails with `error`.
const fakeKafka = (error) => ({
  producer: (options) => ({ options, connect: async () => {}, disconnect: async () => {},
                            send: () => (error ? Promise.reject(error) : new Promise(() => {})) }),
});

test("the settings every language shares", () => {
  const p = new RegionGuardProducer(fakeKafka(), "rg.");
  assert.strictEqual(DELIVERY_TIMEOUT_MS, 30000);
  assert.strictEqual(p.deliveryTimeoutMs, 30000);
  assert.strictEqual(p.producer.options.idempotent, true);
  assert.strictEqual(p.producer.options.maxInFlightRequests, 1);
  assert.strictEqual(p.producer.options.retry.retries, Number.MAX_SAFE_INTEGER);
  assert.strictEqual(p.producer.options.retry.maxRetryTime, 1000);
  assert.strictEqual(p.producer.options.metadataMaxAge, 3000);  // a silent leader is left for the new one
});

test("a send that is never acknowledged rejects with the typed error after the delivery timeout", async () => {
  const p = new RegionGuardProducer(fakeKafka(), "rg.", { deliveryTimeoutMs: 50 });
  const err = await p.write("eu", "users", "upsert", { id: 1 }, { n: 1 }).then(() => null, (e) => e);
  assert.ok(err instanceof WriteNotAcknowledgedError, String(err));
  assert.strictEqual(err.region, "eu");
  assert.strictEqual(err.topic, "rg.writes.eu");
  assert.strictEqual(err.ids.length, 1);
  assert.strictEqual(err.retriable, true);
  assert.match(err.message, /^1 write\(s\) to region eu \(topic rg\.writes\.eu\) not acknowledged \(delivery timeout 0\.05 s\)/);
});

test("retriable by the cause's type: a lost broker is, a refused record is not", async () => {
  const lost = new KafkaJSConnectionError("Connection error:\nECONNREFUSED");
  let err = await new RegionGuardProducer(fakeKafka(lost), "rg.").write("eu", "users", "upsert", { id: 1 }, {}).catch((e) => e);
  assert.ok(err instanceof WriteNotAcknowledgedError && err.retriable && err.cause === lost);
  assert.ok(!err.message.includes("\n"));
  const tooLarge = new KafkaJSProtocolError({ type: "MESSAGE_TOO_LARGE", code: 10, retriable: false, message: "too large" });
  err = await new RegionGuardProducer(fakeKafka(tooLarge), "rg.").write("eu", "users", "upsert", { id: 1 }, {}).catch((e) => e);
  assert.ok(err instanceof WriteNotAcknowledgedError && err.retriable === false);
});
