// The write ids the client makes: UUIDv7 (RFC 9562), time-ordered, so the inbox's index grows at one end.
const test = require("node:test");
const assert = require("node:assert/strict");
const { writeEvent, groupEvent } = require("..");

// The shape of a UUIDv7 in its canonical text: version nibble 7, variant 10xx.
const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
// The id's first 48 bits: its creation time in Unix milliseconds.
const unixMillis = (id) => parseInt(id.replace(/-/g, "").slice(0, 12), 16);
const row = (i) => writeEvent("eu", { table: "users", op: "upsert", key: { id: i }, data: { n: i } });

test("the default id of a write and of a group is a UUIDv7 of its creation time", () => {
  const before = Date.now();
  const ids = [row(1).id, groupEvent("eu", { orderingKey: "customer/42" }, (g) => g.delete("orders", { id: 7 })).id];
  const after = Date.now();
  for (const id of ids) {
    assert.match(id, V7);
    const ms = unixMillis(id);
    assert.ok(ms >= before && ms <= after, `${id} carries ${ms} ms, made in [${before}, ${after}]`);
  }
});

test("ids made in sequence sort in creation order", async () => {
  const ids = Array.from({ length: 1000 }, (_, i) => row(i).id);
  // PostgreSQL orders uuids by their bytes, as their lower-case text sorts
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i - 1] < ids[i], `id ${i} of 1,000 made in sequence sorts before its predecessor: ${ids[i - 1]} then ${ids[i]}`);
  }
  assert.equal(new Set(ids).size, 1000);
  const first = row(1).id;
  // a timer may fire a little early: wait until the clock is 2 ms past the first id's (at most 1 s)
  for (let tries = 0; Date.now() < unixMillis(first) + 2 && tries < 1000; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const second = row(1).id;
  assert.ok(first < second && unixMillis(second) - unixMillis(first) >= 2, `${first} then ${second}`);
});
