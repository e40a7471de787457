// Package regionguard publishes regionguard write events from Go with franz-go.
//
// The contract (DESIGN.md; README "From any language"): topic <prefix>writes.<region>,
// Kafka key <table>/<key values in sorted column order, joined by "/"> (UTF-8), partition
// Java's murmur2 of the key (franz-go's StickyKeyPartitioner with a nil hasher is Kafka's
// murmur2), value a WriteEvent JSON whose fresh UUID id is the idempotency key, produced
// with acks=all and idempotence.
//
//	p, err := regionguard.NewProducer([]string{"127.0.0.1:9092"}, "rg.")
//	if err != nil { log.Fatal(err) }
//	defer p.Close()
//	err = p.Write(ctx, "us-east-1", "users", "upsert",
//		map[string]any{"id": 42}, map[string]any{"name": "Ada", "version": 7})
package regionguard

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Partitioner is the contract's: Java's default for a keyed record,
// (murmur2(key) & 0x7fffffff) % partitions. (A nil hasher is franz-go's Kafka murmur2.)
func Partitioner() kgo.Partitioner { return kgo.StickyKeyPartitioner(nil) }

// WriteEvent is one write to one row of one region (schemas/write-event.schema.json).
type WriteEvent struct {
	ID              string         `json:"id"`
	Region          string         `json:"region"`
	Table           string         `json:"table"`
	Op              string         `json:"op"`
	Key             map[string]any `json:"key"`
	Data            map[string]any `json:"data,omitempty"`
	Policy          string         `json:"policy"`
	FallbackRegions []string       `json:"fallback_regions"`
	CreatedAt       string         `json:"created_at"`
}

// KafkaKey is <table>/<key values in sorted column order, joined by "/">.
// Decode JSON with UseNumber so integers beyond 2^53 keep every digit.
func KafkaKey(table string, key map[string]any) []byte {
	cols := make([]string, 0, len(key))
	for c := range key {
		cols = append(cols, c)
	}
	sort.Strings(cols)
	parts := []string{table}
	for _, c := range cols {
		parts = append(parts, fmt.Sprint(key[c]))
	}
	return []byte(strings.Join(parts, "/"))
}

// NewEvent builds a WriteEvent (policy hold) with a fresh UUID v4 id.
func NewEvent(region, table, op string, key, data map[string]any) WriteEvent {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	return WriteEvent{ID: id, Region: region, Table: table, Op: op, Key: key, Data: data, Policy: "hold",
		FallbackRegions: []string{}, CreatedAt: time.Now().UTC().Format(time.RFC3339Nano)}
}

// Producer publishes write events; Write returns once the broker acknowledged the write.
type Producer struct {
	client *kgo.Client
	prefix string
}

// NewProducer connects to the brokers; extra options (TLS, SASL, ...) are appended.
func NewProducer(brokers []string, topicPrefix string, extra ...kgo.Opt) (*Producer, error) {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()), // acks=all; franz-go is idempotent by default with it
		kgo.RecordPartitioner(Partitioner()),
		kgo.ProducerLinger(5 * time.Millisecond),
	}, extra...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &Producer{client: client, prefix: topicPrefix}, nil
}

// Topic is <prefix>writes.<region>.
func (p *Producer) Topic(region string) string { return p.prefix + "writes." + region }

// Record is the Kafka record of an event, keyed by the contract.
func (p *Producer) Record(ev WriteEvent) (*kgo.Record, error) {
	value, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: p.Topic(ev.Region), Key: KafkaKey(ev.Table, ev.Key), Value: value}, nil
}

// Write publishes one write and waits for the broker's acknowledgement.
func (p *Producer) Write(ctx context.Context, region, table, op string, key, data map[string]any) error {
	rec, err := p.Record(NewEvent(region, table, op, key, data))
	if err != nil {
		return err
	}
	return p.client.ProduceSync(ctx, rec).FirstErr()
}

// Produce queues a write; promise is called once it is acknowledged or failed. Flush waits for all.
func (p *Producer) Produce(ctx context.Context, ev WriteEvent, promise func(*kgo.Record, error)) error {
	rec, err := p.Record(ev)
	if err != nil {
		return err
	}
	p.client.Produce(ctx, rec, promise)
	return nil
}

// Flush waits until every queued write is acknowledged or failed.
func (p *Producer) Flush(ctx context.Context) error { return p.client.Flush(ctx) }

// Close flushes and disconnects.
func (p *Producer) Close() {
	_ = p.client.Flush(context.Background())
	p.client.Close()
}
