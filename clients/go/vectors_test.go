package regionguard

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The repository's shared vectors (schemas/vectors/), two folders up from this module.
func readVectors(t *testing.T, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "schemas", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // integers beyond 2^53 keep every digit in the key
	if err := d.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestKeysAndPartitionsMatchThePartitionVectors(t *testing.T) {
	var doc struct {
		Counts  []int `json:"partition_counts"`
		Vectors []struct {
			Table     string         `json:"table"`
			Key       map[string]any `json:"key"`
			KeyUTF8   string         `json:"key_utf8"`
			KeyHex    string         `json:"key_hex"`
			Partition map[string]int `json:"partition"`
		} `json:"vectors"`
	}
	readVectors(t, "partitions.json", &doc)
	if len(doc.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	// a partitioner made the way NewProducer makes its own
	franz := kgo.StickyKeyPartitioner(nil).ForTopic("vectors")
	for _, v := range doc.Vectors {
		key := KafkaKey(v.Table, v.Key)
		if got := hex.EncodeToString(key); got != v.KeyHex {
			t.Errorf("%s: key %s, want %s", v.KeyUTF8, got, v.KeyHex)
			continue
		}
		for _, n := range doc.Counts {
			want := v.Partition[strconv.Itoa(n)]
			if got := Partition(key, n); got != want {
				t.Errorf("%s in %d: Partition %d, want %d", v.KeyUTF8, n, got, want)
			}
			// and the producer's own partitioner (franz-go's) agrees
			if got := franz.Partition(&kgo.Record{Key: key}, n); got != want {
				t.Errorf("%s in %d: franz-go put it in %d, want %d", v.KeyUTF8, n, got, want)
			}
		}
	}
}

// Each accepted case of write-events.json rebuilt with this package's API has the case's Kafka key.
func TestAcceptedWriteEventVectorsRebuildWithTheirKafkaKeys(t *testing.T) {
	var doc struct {
		Region string `json:"topic_region"`
		Cases  []struct {
			Name     string `json:"name"`
			Outcome  string `json:"outcome"`
			Value    string `json:"value_utf8"`
			KafkaKey string `json:"kafka_key"`
		} `json:"cases"`
	}
	readVectors(t, "write-events.json", &doc)
	checked := 0
	for _, c := range doc.Cases {
		if c.Outcome != "accepted" || c.Value == "" || c.KafkaKey == "" {
			continue
		}
		var w struct {
			Table       string         `json:"table"`
			Op          string         `json:"op"`
			Key         map[string]any `json:"key"`
			Data        map[string]any `json:"data"`
			OrderingKey string         `json:"ordering_key"`
			Ops         []RowOp        `json:"ops"`
		}
		d := json.NewDecoder(bytes.NewReader([]byte(c.Value)))
		d.UseNumber()
		if err := d.Decode(&w); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		var ev WriteEvent
		if w.Ops != nil {
			g := NewGroup(doc.Region, w.OrderingKey)
			for _, op := range w.Ops {
				g.Add(op.Table, op.Op, op.Key, op.Data)
			}
			var err error
			if ev, err = g.Event(); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			if len(ev.Ops) != len(w.Ops) || ev.Ops[0].Op != w.Ops[0].Op || ev.Ops[len(w.Ops)-1].Op != w.Ops[len(w.Ops)-1].Op {
				t.Errorf("%s: ops not kept in order", c.Name)
			}
		} else {
			ev = NewEvent(doc.Region, w.Table, w.Op, w.Key, w.Data)
			ev.OrderingKey = w.OrderingKey
		}
		if got := string(ev.RecordKey()); got != c.KafkaKey {
			t.Errorf("%s: Kafka key %q, want %q", c.Name, got, c.KafkaKey)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no accepted case with a kafka_key")
	}
}
