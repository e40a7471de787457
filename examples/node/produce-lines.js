// Publish many regionguard writes from Node.js (kafkajs), one per stdin line, in order.
//
//   node produce-lines.js [produce] <bootstrap> <topic-prefix> <region> < writes.jsonl
//   each line: {"table": "users", "op": "upsert", "key": {"id": 42}, "data": {"name": "Ada", "version": 7}}
//
// Same contract as produce.js: key `<table>/<key values in sorted column order, joined by "/">`,
// kafkajs' DefaultPartitioner (Java's murmur2), a WriteEvent with a fresh UUID id, acks=all, and
// an idempotent producer (RG_NO_IDEMPOTENCE=1 turns it off for brokers without InitProducerId,
// such as tansu; the event id still makes a duplicate harmless). Prints {"sent": n} once every
// write is acknowledged.
const crypto = require("crypto");
const readline = require("readline");
const { Kafka, Partitioners, logLevel } = require("kafkajs");

// Integers beyond 2^53 lose digits in JSON.parse: send such key values as strings.
const kafkaKey = (table, key) => [table, ...Object.keys(key).sort().map((k) => String(key[k]))].join("/");

const writeEvent = (region, { table, op, key, data }) => ({
  id: crypto.randomUUID(), region, table, op, key, ...(data == null ? {} : { data }),
  policy: "hold", created_at: new Date().toISOString(),
});

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === "produce") args.shift();  // the same command line as the Java and Go examples
  const [bootstrap, prefix, region] = args;
  const messages = [];
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const w = JSON.parse(line);
    messages.push({ key: kafkaKey(w.table, w.key), value: JSON.stringify(writeEvent(region, w)) });
  }
  const kafka = new Kafka({ clientId: "node-example", brokers: bootstrap.split(","), logLevel: logLevel.ERROR });
  const producer = kafka.producer({
    idempotent: process.env.RG_NO_IDEMPOTENCE !== "1",
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const topic = `${prefix}writes.${region}`;
  for (let i = 0; i < messages.length; i += 100) {  // in order: one batch acknowledged before the next
    await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 100) });
  }
  await producer.disconnect();
  console.log(JSON.stringify({ sent: messages.length }));
}

module.exports = { kafkaKey, writeEvent };
if (require.main === module) {
  main().catch((err) => { console.error(`error: ${err.message}`); process.exit(1); });
}
