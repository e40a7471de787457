// Exit non-zero while any regionguard region is not closed (Node.js, kafkajs).
//
//   node regions-closed.js <bootstrap> [topic-prefix]
//
// Reads the compacted `<prefix>region-state` topic (key: region, value: RegionState JSON) to its
// end, keeps per region the record with the highest (epoch, seq), prints one line per region.
// Exit codes: 0 every region closed; 1 some region open or half_open; 3 unknown (no state, or
// the broker could not be read).
const { Kafka, logLevel } = require("kafkajs");

async function readStates(bootstrap, topic) {
  const kafka = new Kafka({ clientId: "rg-regions-closed", brokers: bootstrap.split(","), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const pending = new Set(ends.filter((p) => Number(p.high) > 0).map((p) => p.partition));
  const latest = {};
  if (pending.size === 0) return latest;
  const consumer = kafka.consumer({ groupId: `rg-regions-closed-${process.pid}-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${topic}: not read to the end within 30 s`)), 30000);
    consumer.run({
      // the end is the fetch response's high watermark (batch.highWatermark), not the admin's
      // ListOffsets answer, which some Kafka-compatible brokers (tansu) report too low
      eachBatch: async ({ batch }) => {
        for (const message of batch.messages) {
          if (!message.value) continue;
          const st = JSON.parse(message.value.toString());
          const old = latest[st.region];
          if (!old || (st.epoch || 0) > (old.epoch || 0) || ((st.epoch || 0) === (old.epoch || 0) && st.seq >= old.seq)) {
            latest[st.region] = st;
          }
        }
        if (batch.isEmpty() || Number(batch.lastOffset()) + 1 >= Number(batch.highWatermark)) pending.delete(batch.partition);
        if (pending.size === 0) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  return latest;
}

async function main() {
  const [bootstrap = "127.0.0.1:9092", prefix = "rg."] = process.argv.slice(2);
  let states;
  try {
    states = await readStates(bootstrap, `${prefix}region-state`);
  } catch (err) {
    console.error(`UNKNOWN: ${err.message}`);
    return 3;
  }
  const regions = Object.keys(states).sort();
  if (regions.length === 0) { console.error("UNKNOWN: no region state published yet"); return 3; }
  const notClosed = [];
  for (const r of regions) {
    const st = states[r];
    console.log(`${r}: ${st.state} since ${st.since} (seq ${st.seq}, reason ${st.reason || "-"})`);
    if (st.state !== "closed") notClosed.push(`${r} ${st.state}`);
  }
  if (notClosed.length) { console.error(`NOT CLOSED: ${notClosed.join(", ")}`); return 1; }
  return 0;
}

main().then((code) => process.exit(code), (err) => { console.error(`UNKNOWN: ${err.message}`); process.exit(3); });
