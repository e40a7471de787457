// The client against the repository's shared vectors (schemas/vectors/), under `node --test`.
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { kafkaKey, partition, writeEvent, groupEvent, recordKey } = require("..");

// JSON.parse turns integers beyond 2^53 into the nearest double; the client's documented way out is
// to hand such key values over as strings (docs/clients.md), which this does to the vectors' integers
// of 16 digits or more before parsing (the key text is the same, so the contract's key is too).
const parseExact = (text) => JSON.parse(text.replace(/([:\[,]\s*)(-?\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
const read = (name) => fs.readFileSync(path.join(__dirname, "..", "..", "..", "schemas", "vectors", name), "utf8");

test("every vector key has the contract's bytes and Java's partitions", () => {
  const doc = parseExact(read("partitions.json"));
  assert.ok(doc.vectors.length > 0);
  for (const v of doc.vectors) {
    const key = kafkaKey(v.table, v.key);
    assert.equal(Buffer.from(key, "utf8").toString("hex"), v.key_hex, v.key_utf8);
    for (const n of doc.partition_counts) {
      assert.equal(partition(key, n), v.partition[String(n)], `${v.key_utf8} in ${n}`);
    }
  }
});

test("the accepted write-event vectors rebuild with their Kafka keys", () => {
  const doc = JSON.parse(read("write-events.json"));  // its events are JSON text in strings: parsed one by one
  let checked = 0;
  for (const c of doc.cases) {
    if (c.outcome !== "accepted" || c.value_utf8 == null || c.kafka_key == null) continue;
    const w = parseExact(c.value_utf8);
    const options = { orderingKey: w.ordering_key };
    const event = w.ops != null
      ? groupEvent(doc.topic_region, options, (g) => { for (const op of w.ops) g.add(op.table, op.op, op.key, op.data); })
      : writeEvent(doc.topic_region, w, options);
    assert.equal(recordKey(event), c.kafka_key, c.name);
    if (w.ops != null) assert.deepEqual(event.ops, w.ops, c.name);
    checked += 1;
  }
  assert.ok(checked > 0, "no accepted case with a kafka_key");
});
