// rg-producer: the Go example's command line.
//
//	rg-producer vectors FILE                     key bytes and partitions of schemas/vectors/partitions.json's
//	                                             rows, as this producer builds and partitions them (JSON)
//	rg-producer produce BOOTSTRAP PREFIX REGION  one write per stdin line {"table","op","key","data"}
//	                                             (optionally with "ordering_key"), or one atomic group per
//	                                             line {"ordering_key","ops":[...]}, in order; prints
//	                                             {"sent": n} once every write is acknowledged; exit
//	                                             code 3 and one line if one was not (NotAcknowledgedError)
//	rg-producer group-vectors FILE COUNT...      for schemas/vectors/write-events.json's accepted cases with
//	                                             an ordering_key: the event rebuilt with this package's API,
//	                                             its Kafka key and partitions for the given counts (JSON)
//
// RG_NO_IDEMPOTENCE=1 turns idempotence off for brokers without InitProducerId;
// RG_KAFKA_MAX_VERSION=v2.8.0 (say) caps request versions for brokers that close on newer ones.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"

	regionguard "github.com/regionguard/regionguard/clients/go"
)

func decode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber() // integers beyond 2^53 keep every digit in the key
	return d.Decode(v)
}

func vectors(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc struct {
		Counts  []int `json:"partition_counts"`
		Vectors []struct {
			Table string         `json:"table"`
			Key   map[string]any `json:"key"`
		} `json:"vectors"`
	}
	if err := decode(raw, &doc); err != nil {
		return err
	}
	part := regionguard.Partitioner().ForTopic("vectors")
	out := []map[string]any{}
	for _, v := range doc.Vectors {
		key := regionguard.KafkaKey(v.Table, v.Key)
		parts := map[string]int{}
		for _, n := range doc.Counts {
			parts[fmt.Sprint(n)] = part.Partition(&kgo.Record{Key: key}, n)
		}
		out = append(out, map[string]any{"key_hex": hex.EncodeToString(key), "partition": parts})
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// line is one stdin line or vector value: a single-row write or an atomic group.
type line struct {
	Table           string              `json:"table"`
	Op              string              `json:"op"`
	Key             map[string]any      `json:"key"`
	Data            map[string]any      `json:"data"`
	OrderingKey     *string             `json:"ordering_key"`
	Ops             []regionguard.RowOp `json:"ops"`
	Policy          string              `json:"policy"`
	FallbackRegions []string            `json:"fallback_regions"`
}

// event builds the line's event with the package's API: Group for ops, NewEvent otherwise.
func (w line) event(region string) (regionguard.WriteEvent, error) {
	if w.Ops != nil {
		ok := ""
		if w.OrderingKey != nil {
			ok = *w.OrderingKey
		}
		g := regionguard.NewGroup(region, ok)
		for _, op := range w.Ops {
			g.Add(op.Table, op.Op, op.Key, op.Data)
		}
		if w.Policy != "" {
			g.Policy(w.Policy, w.FallbackRegions...)
		}
		return g.Event()
	}
	ev := regionguard.NewEvent(region, w.Table, w.Op, w.Key, w.Data)
	if w.OrderingKey != nil {
		ev.OrderingKey = *w.OrderingKey
	}
	return ev, nil
}

func groupVectors(path string, counts []string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc struct {
		Region string `json:"topic_region"`
		Cases  []struct {
			Name    string `json:"name"`
			Outcome string `json:"outcome"`
			Value   string `json:"value_utf8"`
		} `json:"cases"`
	}
	if err := decode(raw, &doc); err != nil {
		return err
	}
	part := regionguard.Partitioner().ForTopic("vectors")
	out := []map[string]any{}
	for _, c := range doc.Cases {
		if c.Outcome != "accepted" || c.Value == "" {
			continue
		}
		var w line
		if err := decode([]byte(c.Value), &w); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		if w.OrderingKey == nil {
			continue
		}
		ev, err := w.event(doc.Region)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		key := ev.RecordKey()
		parts := map[string]int{}
		for _, n := range counts {
			k, err := strconv.Atoi(n)
			if err != nil {
				return err
			}
			parts[n] = part.Partition(&kgo.Record{Key: key}, k)
		}
		out = append(out, map[string]any{"name": c.Name, "key_hex": hex.EncodeToString(key), "partition": parts,
			"value": ev})
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func produce(bootstrap, prefix, region string) error {
	var extra []kgo.Opt
	if os.Getenv("RG_NO_IDEMPOTENCE") == "1" {
		extra = append(extra, kgo.DisableIdempotentWrite())
	}
	if v := os.Getenv("RG_KAFKA_MAX_VERSION"); v != "" { // e.g. v2.8.0: pin request versions for older brokers
		versions := kversion.FromString(v)
		if versions == nil {
			return fmt.Errorf("RG_KAFKA_MAX_VERSION %q: not a Kafka version", v)
		}
		extra = append(extra, kgo.MaxVersions(versions))
	}
	p, err := regionguard.NewProducer(strings.Split(bootstrap, ","), prefix, extra...)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var mu sync.Mutex
	var firstErr error
	sent := 0
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	for in.Scan() {
		text := bytes.TrimSpace(in.Bytes())
		if len(text) == 0 {
			continue
		}
		var w line
		if err := decode(text, &w); err != nil {
			return err
		}
		ev, err := w.event(region)
		if err != nil {
			return err
		}
		if err := p.Produce(ctx, ev, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}); err != nil {
			return err
		}
		sent++
	}
	if err := in.Err(); err != nil {
		return err
	}
	// franz-go checks a record's delivery timeout only when its request ends, so with every broker
	// silent a flush can outlast the timeout by a request or two: bound it, and on the error paths
	// exit without Close's flush (what is still buffered was not acknowledged, and is reported so)
	flushCtx, cancel := context.WithTimeout(ctx, regionguard.DeliveryTimeout+5*time.Second)
	defer cancel()
	flushErr := p.Flush(flushCtx)
	mu.Lock()
	failed := firstErr
	mu.Unlock() // before Close: a promise still running takes mu
	if failed != nil {
		return failed
	}
	if flushErr != nil {
		return &regionguard.NotAcknowledgedError{Region: region, Topic: p.Topic(region), ID: "(still buffered)", Err: flushErr}
	}
	p.Close()
	fmt.Printf("{\"sent\": %d}\n", sent)
	return nil
}

func main() {
	a := os.Args[1:]
	var err error
	switch {
	case len(a) == 2 && a[0] == "vectors":
		err = vectors(a[1])
	case len(a) >= 2 && a[0] == "group-vectors":
		err = groupVectors(a[1], a[2:])
	case len(a) == 4 && a[0] == "produce":
		err = produce(a[1], a[2], a[3])
	default:
		fmt.Fprintln(os.Stderr, "usage: rg-producer vectors FILE | rg-producer group-vectors FILE COUNT... | rg-producer produce BOOTSTRAP PREFIX REGION < writes.jsonl")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var nae *regionguard.NotAcknowledgedError
		if errors.As(err, &nae) {
			os.Exit(3) // a write was not acknowledged (docs/clients.md, "The command lines")
		}
		os.Exit(1)
	}
}
