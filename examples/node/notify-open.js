// Follow rg.region-state and rg.failover-events; POST to a webhook when a region opens (kafkajs).
//
//   node notify-open.js <bootstrap> [topic-prefix] [webhook-url]
//
// Prints each failover event and each region-state change (heartbeats skipped); when a region
// turns `open` it POSTs {text, region, state, reason, since, seq} to the webhook (Slack-style
// incoming webhooks read `text`). Starts at the end of both topics. Node 18+ (global fetch).
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap = "127.0.0.1:9092", prefix = "rg.", webhook] = process.argv.slice(2);
  const statesTopic = `${prefix}region-state`, eventsTopic = `${prefix}failover-events`;
  const kafka = new Kafka({ clientId: "rg-notify", brokers: bootstrap.split(","), logLevel: logLevel.ERROR });
  const consumer = kafka.consumer({ groupId: `rg-notify-${process.pid}-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topics: [statesTopic, eventsTopic], fromBeginning: false });
  const last = {};
  const newer = (a, b) => (a.epoch || 0) > (b.epoch || 0) || ((a.epoch || 0) === (b.epoch || 0) && a.seq >= b.seq);
  await consumer.run({
    eachMessage: async ({ topic, message }) => {
      if (!message.value) return;
      const doc = JSON.parse(message.value.toString());
      if (topic === eventsTopic) {
        console.log(`event ${doc.kind} region=${doc.region} service=${doc.service} detail=${JSON.stringify(doc.detail || {})}`);
        return;
      }
      const old = last[doc.region];
      if (old && !newer(doc, old)) return;  // readers keep the highest (epoch, seq)
      last[doc.region] = doc;
      if (old && old.state === doc.state) return;  // heartbeat or repeat
      console.log(`state ${doc.region} ${doc.state} seq=${doc.seq} reason=${doc.reason || "-"}`);
      if (doc.state === "open" && webhook) {
        const body = { text: `regionguard: region ${doc.region} is OPEN (${doc.reason || "-"}); writes to it are held in Kafka until it closes`,
          region: doc.region, state: doc.state, reason: doc.reason || "", since: doc.since, seq: doc.seq };
        try {
          await fetch(webhook, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        } catch (err) { console.error(`webhook failed: ${err.message}`); }  // keep watching
      }
    },
  });
}

main().catch((err) => { console.error(`error: ${err.message}`); process.exit(1); });
