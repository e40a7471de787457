// Partitions the Node client picks for regionguard's test vectors (schemas/vectors/partitions.json),
// with the partitioner RegionGuardProducer uses (regionguard.js). tests/integration/test_partitioning.py
// compares them with the vectors' partitions; test/vectors.test.js checks the same under `node --test`.
//
//   node partitions.js [vectors.json]     -> [{"key_hex": ..., "partition": {"1": p, ...}}, ...]
const fs = require("fs");
const path = require("path");
const { partition: partitionOf } = require("./regionguard");

const file = process.argv[2] || path.join(__dirname, "..", "..", "schemas", "vectors", "partitions.json");
const doc = JSON.parse(fs.readFileSync(file, "utf8"));
const out = doc.vectors.map((v) => {
  const partition = {};
  for (const n of doc.partition_counts) {
    // RegionGuardProducer sends the key's UTF-8 bytes
    const fromString = partitionOf(v.key_utf8, n);
    const fromBytes = partitionOf(Buffer.from(v.key_hex, "hex"), n);
    if (fromString !== fromBytes) throw new Error(`string and bytes disagree for ${v.key_hex}`);
    partition[String(n)] = fromString;
  }
  return { key_hex: v.key_hex, partition };
});
console.log(JSON.stringify(out));
