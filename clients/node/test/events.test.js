// Events and groups the client builds (no broker: tests/integration runs produce-lines.js against one).
const test = require("node:test");
const assert = require("node:assert/strict");
const { kafkaKey, partition, writeEvent, groupEvent, recordKey, message, MAX_GROUP_OPS } = require("..");

test("a write is keyed by its row, values in sorted column order", () => {
  const ev = writeEvent("eu", { table: "docs", op: "upsert", key: { tenant: "acme", path: "a/b" }, data: { body: "x" } });
  assert.match(ev.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(ev.policy, "hold");
  assert.equal(ev.ordering_key, undefined);
  assert.equal(recordKey(ev), "docs/a/b/acme");
  assert.equal(kafkaKey("docs", { tenant: "acme", path: "a/b" }), "docs/a/b/acme");
  const m = message(ev);
  assert.equal(m.key, "docs/a/b/acme");
  assert.deepEqual(JSON.parse(m.value), ev);
});

test("an ordering key becomes the record's key", () => {
  const ev = writeEvent("eu", { table: "orders", op: "delete", key: { id: 7 } }, { orderingKey: "customer/42" });
  assert.equal(recordKey(ev), "customer/42");
  assert.equal("data" in ev, false);
  assert.throws(() => writeEvent("eu", { table: "t", op: "delete", key: { id: 1 } }, { orderingKey: "" }));
});

test("a group is one event with its ops in order; empty, oversized and unkeyed groups are refused", () => {
  const ev = groupEvent("eu", { orderingKey: "customer/42", policy: "failover", fallbackRegions: ["us"] }, (g) => {
    g.insert("orders", { id: 7 }, { user_id: 42 });
    g.delete("order_items", { order_id: 7, line: 1 });
  });
  assert.deepEqual(ev.ops.map((o) => o.op), ["insert", "delete"]);
  assert.equal(recordKey(ev), "customer/42");
  assert.deepEqual(ev.fallback_regions, ["us"]);
  assert.throws(() => groupEvent("eu", { orderingKey: "k" }, () => {}), /at least one op/);
  assert.throws(() => groupEvent("eu", { orderingKey: "" }, (g) => g.delete("t", { id: 1 })), /ordering_key/);
  assert.throws(() => groupEvent("eu", { orderingKey: "k" }, (g) => {
    for (let i = 0; i <= MAX_GROUP_OPS; i++) g.delete("t", { id: i });
  }), /at most/);
  assert.throws(() => partition("k", 0), /at least 1/);
});
