// rg-producer: the Go example's command line.
//
//	rg-producer vectors FILE                     key bytes and partitions of schemas/vectors/partitions.json's
//	                                             rows, as this producer builds and partitions them (JSON)
//	rg-producer produce BOOTSTRAP PREFIX REGION  one write per stdin line {"table","op","key","data"}, in
//	                                             order; prints {"sent": n} once every write is acknowledged
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
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"

	regionguard "example.com/regionguard-producer"
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
	defer p.Close()
	ctx := context.Background()
	var mu sync.Mutex
	var firstErr error
	sent := 0
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	for in.Scan() {
		line := bytes.TrimSpace(in.Bytes())
		if len(line) == 0 {
			continue
		}
		var w struct {
			Table string         `json:"table"`
			Op    string         `json:"op"`
			Key   map[string]any `json:"key"`
			Data  map[string]any `json:"data"`
		}
		if err := decode(line, &w); err != nil {
			return err
		}
		ev := regionguard.NewEvent(region, w.Table, w.Op, w.Key, w.Data)
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
	if err := p.Flush(ctx); err != nil {
		return err
	}
	if firstErr != nil {
		return firstErr
	}
	fmt.Printf("{\"sent\": %d}\n", sent)
	return nil
}

func main() {
	a := os.Args[1:]
	var err error
	switch {
	case len(a) == 2 && a[0] == "vectors":
		err = vectors(a[1])
	case len(a) == 4 && a[0] == "produce":
		err = produce(a[1], a[2], a[3])
	default:
		fmt.Fprintln(os.Stderr, "usage: rg-producer vectors FILE | rg-producer produce BOOTSTRAP PREFIX REGION < writes.jsonl")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
