#!/usr/bin/env node
// Publish many regionguard writes from Node.js (@platformatic/kafka), one per stdin line, in order.
//
//   node produce-lines.js [produce] <bootstrap> <topic-prefix> <region> < writes.jsonl
//   each line: {"table": "users", "op": "upsert", "key": {"id": 42}, "data": {"name": "Ada", "version": 7}}
//     (optionally with "ordering_key": then that is its Kafka key), or an atomic group
//     {"ordering_key": "customer/42", "ops": [{"table", "op", "key", "data"}, ...]}: one record
//   node produce-lines.js group-vectors <write-events.json> <count>...
//     for the vectors' accepted cases with an ordering_key: the event rebuilt with regionguard.js,
//     its Kafka key and the client's partitions for the given partition counts (JSON)
//
// Same contract as produce.js (regionguard.js): key `<table>/<key values in sorted column order,
// joined by "/">` or the ordering key, Java's murmur2 partition, a WriteEvent
// with a fresh UUIDv7 id, acks=all, and an idempotent producer (RG_NO_IDEMPOTENCE=1 turns it off for
// brokers without InitProducerId, such as tansu; the event id still makes a duplicate harmless).
// Prints {"sent": n} once every write is acknowledged; one line and exit code 3 if one was not.
const fs = require("fs");
const readline = require("readline");
const { WriteNotAcknowledgedError, kafkaKey, writeEvent, groupEvent, recordKey, partition: partitionOf,
        RegionGuardProducer } = require("./regionguard");

// A line's event: a group built op by op with groupEvent, else a single-row write.
const lineEvent = (region, w) => {
  const options = { orderingKey: w.ordering_key, ...(w.policy == null ? {} : { policy: w.policy }),
                    ...(w.fallback_regions == null ? {} : { fallbackRegions: w.fallback_regions }) };
  if (w.ops != null) {
    return groupEvent(region, options, (g) => { for (const op of w.ops) g.add(op.table, op.op, op.key, op.data); });
  }
  return writeEvent(region, w, options);
};

function groupVectors(file, counts) {
  const doc = JSON.parse(fs.readFileSync(file, "utf8"));
  const out = [];
  for (const c of doc.cases) {
    if (c.outcome !== "accepted" || c.value_utf8 == null) continue;
    const w = JSON.parse(c.value_utf8);
    if (w.ordering_key == null) continue;
    const event = lineEvent(doc.topic_region, w);
    const key = recordKey(event);
    const partition = {};
    for (const n of counts) partition[n] = partitionOf(key, Number(n));
    out.push({ name: c.name, key_hex: Buffer.from(key, "utf8").toString("hex"), partition, value: event });
  }
  console.log(JSON.stringify(out));
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === "group-vectors") return groupVectors(args[1], args.slice(2));
  if (args[0] === "produce") args.shift();  // the same command line as the Java and Go examples
  const [bootstrap, prefix, region] = args;
  const producer = new RegionGuardProducer(bootstrap, prefix, { idempotent: process.env.RG_NO_IDEMPOTENCE !== "1" });
  // Lines are sent as they arrive, in order: each batch (up to 100 lines read meanwhile) is sent once
  // the one before it is acknowledged; after a failure nothing more is sent.
  let batch = [];
  let sent = 0;
  let failed = null;
  let chain = Promise.resolve();
  const flush = () => {
    if (batch.length === 0 || failed) return;
    const events = batch;
    batch = [];
    chain = chain.then(() => producer.sendEvents(region, events)).then(() => { sent += events.length; });
    chain.catch((err) => { failed = failed || err; });  // handled here: reported once the input ends
  };
  const ticker = setInterval(flush, 20);
  try {
    for await (const line of readline.createInterface({ input: process.stdin })) {
      if (failed) break;  // nothing more is sent after a failure
      if (!line.trim()) continue;
      batch.push(lineEvent(region, JSON.parse(line)));
      if (batch.length >= 100) flush();
    }
    flush();
    await chain;
  } finally {
    clearInterval(ticker);
    // bounded: with the brokers gone silent a close could wait for them
    await Promise.race([producer.disconnect().catch(() => {}), new Promise((ok) => setTimeout(ok, 2000).unref())]);
  }
  console.log(JSON.stringify({ sent }));
}

module.exports = { kafkaKey, writeEvent, lineEvent };
if (require.main === module) {
  // one line; exit code 3 when a write was not acknowledged (docs/clients.md, "The command lines")
  main().catch((err) => {
    console.error(`error: ${err.message}`);
    process.exit(err instanceof WriteNotAcknowledgedError ? 3 : 1);
  });
}
