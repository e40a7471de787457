// Publish one regionguard write from Node.js with the client package (clients/node, docs/clients.md).
//
//   node produce.js <bootstrap> <topic-prefix> <region> <table> <key-json> <data-json>
//
// RegionGuardProducer keys the record by the contract (`<table>/<key values in sorted column order>`),
// partitions it as Java does (murmur2), sends it with acks=all and resolves once it is acknowledged.
// RG_NO_IDEMPOTENCE=1 for brokers without InitProducerId (the event id still makes a duplicate harmless).
const { RegionGuardProducer, kafkaKey } = require("@regionguard/client");

async function main() {
  const [bootstrap, prefix, region, table, keyJson, dataJson] = process.argv.slice(2);
  const key = JSON.parse(keyJson);
  const producer = new RegionGuardProducer(bootstrap, prefix, { idempotent: process.env.RG_NO_IDEMPOTENCE !== "1" });
  const { id } = await producer.write(region, table, "upsert", key, JSON.parse(dataJson));
  await producer.disconnect();
  console.log(JSON.stringify({ id, key: kafkaKey(table, key) }));
}

main().catch((err) => { console.error(`error: ${err.message}`); process.exit(1); });
