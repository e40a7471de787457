// Package regionguard publishes regionguard write events from Go with franz-go
// (docs/clients.md; module github.com/regionguard/regionguard/clients/go).
//
// The contract (docs/contract.md): topic <prefix>writes.<region>,
// Kafka key <table>/<key values in sorted column order, joined by "/"> (UTF-8), partition
// Java's murmur2 of the key (franz-go's StickyKeyPartitioner with a nil hasher is Kafka's
// murmur2), value a WriteEvent JSON whose fresh UUIDv7 id is the idempotency key, produced
// with acks=all and idempotence.
//
//	p, err := regionguard.NewProducer([]string{"127.0.0.1:9092"}, "rg.")
//	if err != nil { log.Fatal(err) }
//	defer p.Close()
//	err = p.Write(ctx, "us-east-1", "users", "upsert",
//		map[string]any{"id": 42}, map[string]any{"name": "Ada", "version": 7})
//
// An atomic write group (DESIGN.md, "Atomic write groups and ordering keys") is ONE record whose
// Kafka key is its ordering key; the router applies its ops in one transaction, in order, all or nothing:
//
//	err = p.Group("us-east-1", "customer/42").
//		Insert("orders", map[string]any{"id": 7}, map[string]any{"user_id": 42, "amount": 30}).
//		Insert("order_items", map[string]any{"order_id": 7, "line": 1}, map[string]any{"sku": "A1", "qty": 2}).
//		Send(ctx) // returns once acknowledged
package regionguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Partitioner is the contract's: Java's default for a keyed record,
// (murmur2(key) & 0x7fffffff) % partitions. (A nil hasher is franz-go's Kafka murmur2.)
func Partitioner() kgo.Partitioner { return kgo.StickyKeyPartitioner(nil) }

// Partition is the partition of a keyed record among n: (murmur2(key) & 0x7fffffff) % n, as
// Partitioner (franz-go's Kafka murmur2) picks it, computed without a client or a broker.
func Partition(key []byte, n int) int {
	if n < 1 {
		panic(fmt.Sprintf("regionguard.Partition: %d partitions", n))
	}
	return Partitioner().ForTopic("").Partition(&kgo.Record{Key: key}, n)
}

// WriteEvent is one write to one row of one region, or an atomic group of row operations (Ops,
// with OrderingKey and no Table/Op/Key/Data) (schemas/write-event.schema.json).
type WriteEvent struct {
	ID              string         `json:"id"`
	Region          string         `json:"region"`
	Table           string         `json:"table,omitempty"`
	Op              string         `json:"op,omitempty"`
	Key             map[string]any `json:"key,omitempty"`
	Data            map[string]any `json:"data,omitempty"`
	OrderingKey     string         `json:"ordering_key,omitempty"`
	Ops             []RowOp        `json:"ops,omitempty"`
	Policy          string         `json:"policy"`
	FallbackRegions []string       `json:"fallback_regions"`
	CreatedAt       string         `json:"created_at"`
}

// RowOp is one row operation of a write group; Data may be nil only for a delete.
type RowOp struct {
	Table string         `json:"table"`
	Op    string         `json:"op"`
	Key   map[string]any `json:"key"`
	Data  map[string]any `json:"data,omitempty"`
}

// MaxGroupOps is the most row operations one group may hold.
const MaxGroupOps = 1000

// RecordKey is the event's Kafka key: its ordering key when it has one, else KafkaKey(table, key).
func (ev WriteEvent) RecordKey() []byte {
	if ev.OrderingKey != "" {
		return []byte(ev.OrderingKey)
	}
	return KafkaKey(ev.Table, ev.Key)
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

// newID is a fresh UUIDv7 (RFC 9562): its first 48 bits are the Unix time in milliseconds and
// google/uuid counts within a millisecond, so ids made in sequence sort in creation order and the
// inbox's primary key (regionguard_applied.write_id) grows at one end instead of taking each claim on
// a random page of its index (bench/inbox_ids.py: about twice the claims on a large inbox).
func newID() string {
	id, err := uuid.NewV7()
	if err != nil { // crypto/rand failed: no id can be made safely
		panic(fmt.Sprintf("regionguard: cannot make a write id: %v", err))
	}
	return id.String()
}

// NewEvent builds a WriteEvent (policy hold) with a fresh, time-ordered UUIDv7 id (set ID to use
// the app's own: any UUID is accepted). Set OrderingKey on it to
// key the record by that instead of the row (its writes then apply in order with the key's groups).
func NewEvent(region, table, op string, key, data map[string]any) WriteEvent {
	return WriteEvent{ID: newID(), Region: region, Table: table, Op: op, Key: key, Data: data, Policy: "hold",
		FallbackRegions: []string{}, CreatedAt: time.Now().UTC().Format(time.RFC3339Nano)}
}

// Group collects the row operations of one atomic write group, in the order they apply.
// Build it with Producer.Group (or NewGroup) and publish it with Send or Produce: one record.
type Group struct {
	p   *Producer
	ev  WriteEvent
	err error
}

// NewGroup starts a group of region keyed by orderingKey (policy hold, a fresh UUIDv7 id).
func NewGroup(region, orderingKey string) *Group {
	g := &Group{ev: WriteEvent{ID: newID(), Region: region, OrderingKey: orderingKey, Policy: "hold",
		FallbackRegions: []string{}}}
	if orderingKey == "" {
		g.err = errors.New("a write group needs a non-empty ordering key")
	}
	return g
}

// Group starts an atomic write group of region on this producer.
func (p *Producer) Group(region, orderingKey string) *Group {
	g := NewGroup(region, orderingKey)
	g.p = p
	return g
}

// Add appends one row operation; data may be nil only for a delete.
func (g *Group) Add(table, op string, key, data map[string]any) *Group {
	if len(g.ev.Ops) >= MaxGroupOps && g.err == nil {
		g.err = fmt.Errorf("a write group holds at most %d ops", MaxGroupOps)
	}
	g.ev.Ops = append(g.ev.Ops, RowOp{Table: table, Op: op, Key: key, Data: data})
	return g
}

func (g *Group) Insert(table string, key, data map[string]any) *Group {
	return g.Add(table, "insert", key, data)
}
func (g *Group) Upsert(table string, key, data map[string]any) *Group {
	return g.Add(table, "upsert", key, data)
}
func (g *Group) Update(table string, key, data map[string]any) *Group {
	return g.Add(table, "update", key, data)
}
func (g *Group) Delete(table string, key map[string]any) *Group {
	return g.Add(table, "delete", key, nil)
}

// Policy sets hold (the default), failover (with its fallback regions) or shed.
func (g *Group) Policy(policy string, fallbackRegions ...string) *Group {
	g.ev.Policy = policy
	g.ev.FallbackRegions = append([]string{}, fallbackRegions...)
	return g
}

// Event is the group's WriteEvent, or an error if it is empty, too big or has no ordering key.
func (g *Group) Event() (WriteEvent, error) {
	if g.err != nil {
		return WriteEvent{}, g.err
	}
	if len(g.ev.Ops) == 0 {
		return WriteEvent{}, errors.New("a write group needs at least one op")
	}
	ev := g.ev
	ev.Ops = append([]RowOp{}, g.ev.Ops...)
	ev.CreatedAt = time.Now().UTC().Format(time.RFC3339Nano)
	return ev, nil
}

// Send publishes the group as one record and waits for the broker's acknowledgement.
func (g *Group) Send(ctx context.Context) error {
	ev, err := g.Event()
	if err != nil {
		return err
	}
	rec, err := g.p.Record(ev)
	if err != nil {
		return err
	}
	return g.p.notAcknowledged(rec, ev, g.p.client.ProduceSync(ctx, rec).FirstErr())
}

// Produce queues the group as one record; promise is called once it is acknowledged or failed.
func (g *Group) Produce(ctx context.Context, promise func(*kgo.Record, error)) error {
	ev, err := g.Event()
	if err != nil {
		return err
	}
	return g.p.Produce(ctx, ev, promise)
}

// Producer publishes write events; Write returns once the broker acknowledged the write.
type Producer struct {
	client *kgo.Client
	prefix string
}

// DeliveryTimeout is how long Kafka has to acknowledge a write before Write, Send, Produce's promise
// or Flush report a *NotAcknowledgedError (docs/producers.md, "When brokers fail": the same in
// every language). It rides out a leader move (the broker session timeout, 9 s by default, then an
// election) and tells the app of a dead region within half a minute.
const DeliveryTimeout = 30 * time.Second

// NotAcknowledgedError is the error of a write Kafka did not acknowledge: its region's brokers are
// gone, the delivery timeout passed, or the broker refused the record. Retriable says whether
// sending the same event again (same id: the inbox applies it once) can help. Test for it with
// errors.As; Unwrap gives franz-go's error.
type NotAcknowledgedError struct {
	Region string
	Topic  string
	ID     string // the write id (the event's idempotency key)
	Err    error
}

func (e *NotAcknowledgedError) Error() string {
	return strings.Join(strings.Fields(fmt.Sprintf("write %s to region %s (topic %s) not acknowledged (delivery timeout %s): %v",
		e.ID, e.Region, e.Topic, DeliveryTimeout, e.Err)), " ")
}

func (e *NotAcknowledgedError) Unwrap() error { return e.Err }

// Retriable is false only for a broker's refusal that would refuse the record again (too large, invalid).
func (e *NotAcknowledgedError) Retriable() bool {
	var ke *kerr.Error
	if errors.As(e.Err, &ke) {
		return ke.Retriable
	}
	return true // timeouts, dead connections, a canceled context
}

func (p *Producer) notAcknowledged(rec *kgo.Record, ev WriteEvent, err error) error {
	if err == nil {
		return nil
	}
	return &NotAcknowledgedError{Region: ev.Region, Topic: rec.Topic, ID: ev.ID, Err: err}
}

// NewProducer connects to the brokers; extra options (TLS, SASL, ...) are appended.
func NewProducer(brokers []string, topicPrefix string, extra ...kgo.Opt) (*Producer, error) {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()), // acks=all; franz-go is idempotent by default with it
		kgo.RecordPartitioner(Partitioner()),
		kgo.ProducerLinger(5 * time.Millisecond),
		// retries are left to the delivery timeout (RecordRetries stays unlimited); in flight: franz-go's
		// idempotent maximum (5 per broker), which keeps each partition's order
		kgo.RecordDeliveryTimeout(DeliveryTimeout),
		// a request to a leader gone silent is given up after 10 s in all (the broker's 5 s to answer and
		// the client's 5 s overhead; franz-go's defaults make it 20 s, and the retry to the new leader
		// then missed the delivery timeout), and retried to the new leader in time
		kgo.ProduceRequestTimeout(5 * time.Second),
		kgo.RequestTimeoutOverhead(5 * time.Second),
		kgo.MetadataMinAge(500 * time.Millisecond), // after a request timeout, look for the new leader at once
		// without it franz-go never fails a record already sent to a broker that stopped answering
		// (it waits for an answer to keep its sequence numbers), so a dead region hung Write forever;
		// a write failed that way may still land, and sending it again with the same id is harmless
		kgo.AllowIdempotentProduceCancellation(),
	}, extra...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &Producer{client: client, prefix: topicPrefix}, nil
}

// Topic is <prefix>writes.<region>.
func (p *Producer) Topic(region string) string { return p.prefix + "writes." + region }

// Record is the Kafka record of an event, keyed by the contract (its ordering key, else its row).
func (p *Producer) Record(ev WriteEvent) (*kgo.Record, error) {
	value, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: p.Topic(ev.Region), Key: ev.RecordKey(), Value: value}, nil
}

// Write publishes one write and waits for the broker's acknowledgement (a *NotAcknowledgedError
// once the delivery timeout passed without it).
func (p *Producer) Write(ctx context.Context, region, table, op string, key, data map[string]any) error {
	ev := NewEvent(region, table, op, key, data)
	rec, err := p.Record(ev)
	if err != nil {
		return err
	}
	return p.notAcknowledged(rec, ev, p.client.ProduceSync(ctx, rec).FirstErr())
}

// Produce queues a write; promise is called once it is acknowledged or failed (with a
// *NotAcknowledgedError). Flush waits for all.
func (p *Producer) Produce(ctx context.Context, ev WriteEvent, promise func(*kgo.Record, error)) error {
	rec, err := p.Record(ev)
	if err != nil {
		return err
	}
	p.client.Produce(ctx, rec, func(r *kgo.Record, err error) { promise(r, p.notAcknowledged(r, ev, err)) })
	return nil
}

// Flush waits until every queued write is acknowledged or failed.
func (p *Producer) Flush(ctx context.Context) error { return p.client.Flush(ctx) }

// Close flushes, for at most the delivery timeout, and disconnects: with the region's brokers gone an
// unbounded flush would hold the app for as long as franz-go keeps retrying.
func (p *Producer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), DeliveryTimeout)
	defer cancel()
	_ = p.client.Flush(ctx)
	p.client.Close()
}
