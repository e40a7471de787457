package regionguard

import (
	"encoding/hex"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// The shape of a UUIDv7 in its canonical text (RFC 9562, section 5.7): version nibble 7, variant 10xx.
var v7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// unixMillis is the id's first 48 bits: its creation time in Unix milliseconds.
func unixMillis(t *testing.T, id string) int64 {
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", "")[:12])
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	var ms int64
	for _, c := range b {
		ms = ms<<8 | int64(c)
	}
	return ms
}

func TestTheDefaultIdIsAUUIDv7OfItsCreationTime(t *testing.T) {
	before := time.Now().UnixMilli()
	ids := []string{NewEvent("eu", "users", "upsert", map[string]any{"id": 1}, nil).ID}
	g, err := NewGroup("eu", "customer/42").Delete("orders", map[string]any{"id": 7}).Event()
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, g.ID)
	after := time.Now().UnixMilli()
	for _, id := range ids {
		if !v7.MatchString(id) {
			t.Errorf("id %q is not a UUIDv7 of the RFC variant", id)
		}
		if ms := unixMillis(t, id); ms < before || ms > after {
			t.Errorf("id %q carries %d ms, made between %d and %d", id, ms, before, after)
		}
	}
}

func TestIdsMadeInSequenceSortInCreationOrder(t *testing.T) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = NewEvent("eu", "users", "upsert", map[string]any{"id": i}, nil).ID
	}
	// PostgreSQL orders uuids by their bytes, as their lower-case text sorts
	if !sort.StringsAreSorted(ids) {
		t.Error("1,000 ids made in sequence do not sort in creation order")
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("id %q made twice", id)
		}
		seen[id] = true
	}
	first := NewEvent("eu", "users", "upsert", map[string]any{"id": 1}, nil).ID
	time.Sleep(2 * time.Millisecond)
	second := NewEvent("eu", "users", "upsert", map[string]any{"id": 1}, nil).ID
	if !(first < second) || unixMillis(t, second)-unixMillis(t, first) < 2 {
		t.Errorf("ids made 2 ms apart: %q then %q", first, second)
	}
}

func TestAnAppSuppliedIdIsKept(t *testing.T) {
	p := &Producer{prefix: "rg."}
	ev := NewEvent("eu", "users", "upsert", map[string]any{"id": 1}, nil)
	ev.ID = "0b5a3f5e-8f1d-4c3e-9a6b-2d7c1e4f5a6b" // a v4 id of the app's: any UUID is accepted
	rec, err := p.Record(ev)
	if err != nil || !strings.Contains(string(rec.Value), `"id":"0b5a3f5e-8f1d-4c3e-9a6b-2d7c1e4f5a6b"`) {
		t.Fatalf("record %s, error %v", rec.Value, err)
	}
}
