// Publish one regionguard write event from Node.js (no Python SDK).
//
// The contract (DESIGN.md): topic `<prefix>writes.<region>`, Kafka key
// `<table>/<key values in sorted column order, joined by "/">`, partition Java's
// murmur2 of the key (kafkajs' DefaultPartitioner), value the
// WriteEvent JSON with a fresh UUID as its idempotency key. Use
// acks=all (-1); the write is acknowledged when send()
// resolves.
//
//   node produce.js <bootstrap> <topic-prefix> <region> <table> <key-json> <data-json>
const crypto = require("crypto");
const { Kafka, Partitioners, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, prefix, region, table, keyJson, dataJson] = process.argv.slice(2);
  const key = JSON.parse(keyJson);
  const event = {
    id: crypto.randomUUID(),
    region,
    table,
    op: "upsert",
    key,
    data: JSON.parse(dataJson),
    created_at: new Date().toISOString(),
  };
  const kafkaKey = [table, ...Object.keys(key).sort().map((k) => String(key[k]))].join("/");
  const kafka = new Kafka({ clientId: "node-example", brokers: bootstrap.split(","), logLevel: logLevel.ERROR });
  // Retries may duplicate a record; that is harmless, because the event id is the
  // idempotency key and every region applies an id at most once. (Turn on
  // `idempotent: true` on Apache Kafka; the tansu test broker rejects kafkajs's
  // InitProducerId.)
  // DefaultPartitioner is Java's murmur2 partitioner (the contract's; kafkajs' default
  // since 2.0), so a row's writes share a partition with those of every other producer.
  const producer = kafka.producer({ maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  await producer.send({ topic: `${prefix}writes.${region}`, acks: -1, messages: [{ key: kafkaKey, value: JSON.stringify(event) }] });
  await producer.disconnect();
  console.log(JSON.stringify({ id: event.id, key: kafkaKey }));
}

main().catch((err) => { console.error(`error: ${err.message}`); process.exit(1); });
