// Partitions kafkajs picks for regionguard's test vectors (schemas/vectors/partitions.json),
// with the partitioner produce.js uses. A test compares them with the vectors' partitions.
//
//   node partitions.js [vectors.json]     -> [{"key_hex": ..., "partition": {"1": p, ...}}, ...]
const fs = require("fs");
const path = require("path");
const { Partitioners } = require("kafkajs");

const file = process.argv[2] || path.join(__dirname, "..", "..", "schemas", "vectors", "partitions.json");
const doc = JSON.parse(fs.readFileSync(file, "utf8"));
const out = doc.vectors.map((v) => {
  const partition = {};
  for (const n of doc.partition_counts) {
    const partitionMetadata = Array.from({ length: n }, (_, i) => ({ partitionId: i, leader: 0 }));
    const pick = Partitioners.DefaultPartitioner();
    // produce.js sends the key as a string; kafkajs hashes its UTF-8 bytes
    const fromString = pick({ topic: "t", partitionMetadata, message: { key: v.key_utf8 } });
    const fromBytes = pick({ topic: "t", partitionMetadata, message: { key: Buffer.from(v.key_hex, "hex") } });
    if (fromString !== fromBytes) throw new Error(`string and bytes disagree for ${v.key_hex}`);
    partition[String(n)] = fromString;
  }
  return { key_hex: v.key_hex, partition };
});
console.log(JSON.stringify(out));
