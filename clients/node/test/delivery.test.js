// The delivery timeout and the typed error of a write Kafka did not acknowledge (docs/producers.md,
// "When brokers fail"); against real brokers: tests/integration/test_producer_failover.py.
const test = require("node:test");
const assert = require("node:assert");
const { NetworkError, ProtocolError, TimeoutError, MultipleErrors, ProduceAcks } = require("@platformatic/kafka");
const { DELIVERY_TIMEOUT_MS, REQUEST_TIMEOUT_MS, RegionGuardProducer, WriteNotAcknowledgedError, partition } = require("../regionguard");

// A @platformatic/kafka stand-in: send() answers with the next of `outcomes` (an Error rejects, "hang"
// never settles, as with brokers gone silent, anything else resolves), the last one repeated.
// A renewed client is a new stand-in on the same outcomes; `sent` records every client's sends.
const standIn = (p, outcomes) => {
  const sent = [];
  const fake = () => ({
    close: async () => {},
    send: (options) => {
      sent.push(options);
      const o = outcomes[Math.min(sent.length, outcomes.length) - 1];
      if (o === "hang") return new Promise(() => {});
      return o instanceof Error ? Promise.reject(o) : Promise.resolve({ offsets: [] });
    },
  });
  p.producer.close(true).catch(() => {});
  p.producer = fake();
  p.renew = function renew(failed) {
    if (this.producer !== failed) return;
    this.renewals += 1;
    this.producer = fake();
  };
  return sent;
};

test("the settings every language shares", async () => {
  const p = new RegionGuardProducer("127.0.0.1:9092,127.0.0.2:9092", "rg.");
  try {
    assert.strictEqual(DELIVERY_TIMEOUT_MS, 30000);
    assert.strictEqual(p.deliveryTimeoutMs, 30000);
    assert.deepStrictEqual(p.options.bootstrapBrokers, ["127.0.0.1:9092", "127.0.0.2:9092"]);
    assert.strictEqual(p.options.idempotent, true);
    assert.strictEqual(p.options.acks, ProduceAcks.ALL);
    assert.strictEqual(p.options.acks, -1);
    assert.strictEqual(p.options.requestTimeout, REQUEST_TIMEOUT_MS);  // the client's wait for an answer
    assert.strictEqual(p.options.timeout, REQUEST_TIMEOUT_MS);
    assert.strictEqual(REQUEST_TIMEOUT_MS, 10000);
    assert.strictEqual(p.options.maxInflights, 1);
    assert.strictEqual(p.options.metadataMaxAge, 3000);  // a moved leader is looked up again soon
    // the partitioner is Java's, whatever the caller's options say
    const own = new RegionGuardProducer({ bootstrapBrokers: ["h:1"], acks: 1, idempotent: false, partitioner: () => 0 }, "rg.");
    assert.strictEqual(own.options.acks, -1);
    assert.strictEqual(own.options.idempotent, true);
    assert.strictEqual(own.options.partitioner(null, Buffer.from("users/42")) % 12, partition("users/42", 12));
    await own.disconnect();
  } finally {
    await p.disconnect();
  }
});

test("a send that is never acknowledged rejects with the typed error after the delivery timeout", async () => {
  const p = new RegionGuardProducer("127.0.0.1:9092", "rg.", { deliveryTimeoutMs: 50 });
  standIn(p, ["hang"]);
  const err = await p.write("eu", "users", "upsert", { id: 1 }, { n: 1 }).then(() => null, (e) => e);
  assert.ok(err instanceof WriteNotAcknowledgedError, String(err));
  assert.strictEqual(err.region, "eu");
  assert.strictEqual(err.topic, "rg.writes.eu");
  assert.strictEqual(err.ids.length, 1);
  assert.strictEqual(err.retriable, true);
  assert.match(err.message, /^1 write\(s\) to region eu \(topic rg\.writes\.eu\) not acknowledged \(delivery timeout 0\.05 s\)/);
});

test("a send the library gave up on is tried again within the delivery timeout", async () => {
  const p = new RegionGuardProducer("127.0.0.1:9092", "rg.", { deliveryTimeoutMs: 5000 });
  const lost = new MultipleErrors("produce failed 6 times.", [new NetworkError("Connection closed")]);
  const sent = standIn(p, [lost, new TimeoutError("Request timed out"), "ok"]);
  const token = await p.write("eu", "users", "upsert", { id: 1 }, { n: 1 });
  assert.strictEqual(sent.length, 3);
  assert.strictEqual(sent[2].messages[0].topic, "rg.writes.eu");
  assert.strictEqual(sent[2].messages[0].key.toString(), "users/1");
  assert.strictEqual(JSON.parse(sent[2].messages[0].value).id, token.id);
  assert.deepStrictEqual(sent[0].messages, sent[2].messages);  // the same records: the same ids
});

test("a try the library never answers is given up after the attempt timeout and sent again on a new client", async () => {
  const p = new RegionGuardProducer("127.0.0.1:9092", "rg.", { deliveryTimeoutMs: 5000 });
  p.attemptTimeoutMs = 30;
  const sent = standIn(p, ["hang", "ok"]);
  await p.write("eu", "users", "upsert", { id: 1 }, { n: 1 });
  assert.strictEqual(sent.length, 2);
  assert.strictEqual(p.renewals, 1);
});

test("a renewed client asks another broker first; a second renewal for the same failure is a no-op", async () => {
  const p = new RegionGuardProducer("a:1,b:2,c:3", "rg.");
  const first = p.producer;
  p.renew(first);
  assert.notStrictEqual(p.producer, first);
  assert.deepStrictEqual(p.bootstrap, ["b:2", "c:3", "a:1"]);
  const second = p.producer;
  p.renew(first);  // a send that failed on the old client: already renewed
  assert.strictEqual(p.producer, second);
  p.renew(second);
  assert.deepStrictEqual(p.bootstrap, ["c:3", "a:1", "b:2"]);
  await p.disconnect();
});

test("retriable by the cause's type: a lost broker is, a refused record is not", async () => {
  const lost = new MultipleErrors("produce failed 6 times.", [new NetworkError("Connection error:\nECONNREFUSED")]);
  let p = new RegionGuardProducer("127.0.0.1:9092", "rg.", { deliveryTimeoutMs: 600 });
  standIn(p, [lost]);
  let err = await p.write("eu", "users", "upsert", { id: 1 }, {}).catch((e) => e);
  assert.ok(err instanceof WriteNotAcknowledgedError && err.retriable, String(err));
  assert.ok(!err.message.includes("\n"));
  assert.match(err.message, /ECONNREFUSED/);  // the last try's cause, on the one line
  const tooLarge = new MultipleErrors("Producing messages failed.", [new ProtocolError("MESSAGE_TOO_LARGE")]);
  p = new RegionGuardProducer("127.0.0.1:9092", "rg.");
  const sent = standIn(p, [tooLarge]);
  err = await p.write("eu", "users", "upsert", { id: 1 }, {}).catch((e) => e);
  assert.ok(err instanceof WriteNotAcknowledgedError && err.retriable === false, String(err));
  assert.strictEqual(sent.length, 1);  // not tried again
});
