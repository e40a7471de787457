package io.github.regionguard.client;

import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.github.f4b6a3.uuid.UuidCreator;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Publishes regionguard write events by the contract (docs/contract.md; docs/clients.md):
 * topic {@code <prefix>writes.<region>}, Kafka key {@code <table>/<key values in sorted column order,
 * joined by "/">} (UTF-8), kafka-clients' default partitioner (murmur2 of the key: the contract's),
 * value a WriteEvent JSON with a fresh UUIDv7 ({@link #newWriteId}) as its idempotency key, {@code acks=all} and idempotence.
 *
 * <pre>{@code
 * try (var p = new RegionGuardProducer("127.0.0.1:9092", "rg.")) {
 *     p.write("us-east-1", "users", "upsert", Map.of("id", 42), Map.of("name", "Ada", "version", 7));
 * } // close() flushes: the writes are acknowledged once it returns
 * }</pre>
 *
 * <p>An atomic write group (DESIGN.md, "Atomic write groups and ordering keys"): several row
 * operations in ONE record, keyed by its ordering key; the router applies them in one transaction,
 * in order, all or nothing:
 *
 * <pre>{@code
 * p.group("us-east-1", "customer/42")
 *  .insert("orders", Map.of("id", 7), Map.of("user_id", 42, "amount", 30))
 *  .insert("order_items", Map.of("order_id", 7, "line", 1), Map.of("sku", "A1", "qty", 2))
 *  .send().get();   // acknowledged as one record
 * }</pre>
 */
public final class RegionGuardProducer implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * How long Kafka has to acknowledge a write before its future fails with
     * {@link WriteNotAcknowledgedException} (docs/producers.md, "When brokers fail": the same in every
     * language): it rides out a leader move (the broker session timeout, 9 s by default, then an
     * election) and tells the app of a dead region within half a minute. {@code send()} blocks for
     * metadata at most as long ({@code max.block.ms}).
     */
    public static final int DELIVERY_TIMEOUT_MS = 30_000;
    /** A request to a leader that stopped answering is given up after this and retried to the new one. */
    public static final int REQUEST_TIMEOUT_MS = 10_000;

    private final Producer<byte[], byte[]> producer;
    private final String topicPrefix;

    public RegionGuardProducer(String bootstrap, String topicPrefix) {
        this(bootstrap, topicPrefix, new Properties());
    }

    /** {@code extra} is passed to kafka-clients as is (security.protocol, sasl.*, ssl.*, ...). */
    public RegionGuardProducer(String bootstrap, String topicPrefix, Properties extra) {
        this(new KafkaProducer<>(settings(bootstrap, extra), new ByteArraySerializer(), new ByteArraySerializer()),
             topicPrefix);
    }

    /**
     * acks=all and idempotence; a bounded delivery timeout, retries left to it, 5 requests in flight (the
     * most idempotence keeps in order); no partitioner.class: kafka-clients' built-in one is the
     * contract's murmur2. {@code extra} may override any of them.
     */
    static Properties settings(String bootstrap, Properties extra) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, Integer.toString(DELIVERY_TIMEOUT_MS));
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, Integer.toString(REQUEST_TIMEOUT_MS));
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, Integer.toString(DELIVERY_TIMEOUT_MS));  // default 60 s
        props.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        props.put(ProducerConfig.RETRIES_CONFIG, Integer.toString(Integer.MAX_VALUE));
        props.putAll(extra);
        return props;
    }

    /**
     * Over a producer of your own (kafka-clients' {@code MockProducer} in tests); it must keep the default
     * partitioner (no {@code partitioner.class}), acks=all and idempotence. close() closes it.
     */
    public RegionGuardProducer(Producer<byte[], byte[]> producer, String topicPrefix) {
        this.producer = producer;
        this.topicPrefix = topicPrefix;
    }

    /**
     * A fresh write id: a UUIDv7 (RFC 9562), the Unix time in milliseconds in its first 48 bits, then a
     * counter within the millisecond and random bits (uuid-creator, from a SecureRandom). Ids made in
     * sequence sort in creation order, so the inbox's primary key ({@code regionguard_applied.write_id})
     * grows at one end instead of taking each claim on a random page of its index (bench/inbox_ids.py:
     * about twice the claims on a large inbox). Any UUID an app passes instead is accepted.
     */
    public static UUID newWriteId() {
        return UuidCreator.getTimeOrderedEpoch();
    }

    /** The contract's Kafka key of a row ({@link Keys#kafkaKey}). */
    public static byte[] kafkaKey(String table, Map<String, ?> key) {
        return Keys.kafkaKey(table, key);
    }

    /** The WriteEvent JSON (policy hold) for one row; {@code data} may be null for a delete. */
    public static ObjectNode event(UUID id, String region, String table, String op, Map<String, ?> key,
                                   Map<String, ?> data) {
        ObjectNode ev = JSON.createObjectNode();
        ev.put("id", id.toString());
        ev.put("region", region);
        ev.put("table", table);
        ev.put("op", op);
        ev.set("key", JSON.valueToTree(key));
        if (data != null) ev.set("data", JSON.valueToTree(data));
        ev.put("policy", "hold");
        ev.put("created_at", Instant.now().toString());
        return ev;
    }

    /** A single-row event that also carries an ordering key (then its Kafka key), or none when null. */
    public static ObjectNode event(UUID id, String region, String table, String op, Map<String, ?> key,
                                   Map<String, ?> data, String orderingKey) {
        ObjectNode ev = event(id, region, table, op, key, data);
        if (orderingKey != null) ev.put("ordering_key", Keys.requireOrderingKey(orderingKey));
        return ev;
    }

    public String topic(String region) {
        return topicPrefix + "writes." + region;
    }

    /** Sends one write; the returned future completes when the broker acknowledged it. */
    public CompletableFuture<RecordMetadata> write(String region, String table, String op, Map<String, ?> key,
                                        Map<String, ?> data) {
        return send(region, kafkaKey(table, key), event(newWriteId(), region, table, op, key, data));
    }

    /**
     * Sends one write with an ordering key: the record's Kafka key is {@code orderingKey} (UTF-8), so it
     * applies in order with every other event of that key (a null key falls back to the row's key).
     */
    public CompletableFuture<RecordMetadata> write(String region, String table, String op, Map<String, ?> key,
                                        Map<String, ?> data, String orderingKey) {
        if (orderingKey == null) return write(region, table, op, key, data);
        return send(region, Keys.orderingKey(orderingKey),
                    event(newWriteId(), region, table, op, key, data, orderingKey));
    }

    /** An atomic write group of {@code region}, keyed by {@code orderingKey}; {@link Group#send()} publishes it. */
    public Group group(String region, String orderingKey) {
        return new Group(this, region, orderingKey);
    }

    /**
     * Sends one event; the future completes when the broker acknowledged it, or exceptionally with
     * {@link WriteNotAcknowledgedException} ({@code get()} throws it wrapped in an ExecutionException).
     */
    public CompletableFuture<RecordMetadata> send(String region, byte[] kafkaKey, ObjectNode event) {
        byte[] value;
        try {
            value = JSON.writeValueAsBytes(event);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException("event is not JSON-serialisable", e);
        }
        String topic = topic(region);
        String id = event.path("id").asText();
        CompletableFuture<RecordMetadata> acked = new CompletableFuture<>();
        try {
            producer.send(new ProducerRecord<>(topic, kafkaKey, value), (md, err) -> {
                if (err == null) acked.complete(md);
                else acked.completeExceptionally(new WriteNotAcknowledgedException(region, topic, id, err));
            });
        } catch (KafkaException e) {  // refused before sending: the producer is closed, or a fatal error
            acked.completeExceptionally(new WriteNotAcknowledgedException(region, topic, id, e));
        }
        return acked;
    }

    public void flush() {
        producer.flush();
    }

    @Override
    public void close() {
        producer.close();
    }

    /**
     * The row operations of one atomic write group, added in the order they apply; {@link #send()}
     * publishes them as one record (value: the group's WriteEvent, key: its ordering key).
     */
    public static final class Group {
        public static final int MAX_OPS = 1000;

        private final RegionGuardProducer producer;
        private final String region;
        private final String orderingKey;
        private final ArrayNode ops = JSON.createArrayNode();
        private UUID id = newWriteId();
        private String policy = "hold";
        private List<String> fallbackRegions = List.of();
        private boolean sent;

        Group(RegionGuardProducer producer, String region, String orderingKey) {
            this.producer = producer;
            this.region = region;
            this.orderingKey = Keys.requireOrderingKey(orderingKey);
        }

        public Group insert(String table, Map<String, ?> key, Map<String, ?> data) {
            return op(table, "insert", key, data);
        }

        public Group upsert(String table, Map<String, ?> key, Map<String, ?> data) {
            return op(table, "upsert", key, data);
        }

        public Group update(String table, Map<String, ?> key, Map<String, ?> data) {
            return op(table, "update", key, data);
        }

        public Group delete(String table, Map<String, ?> key) {
            return op(table, "delete", key, null);
        }

        /** One row operation; {@code data} may be null only for a delete. */
        public Group op(String table, String op, Map<String, ?> key, Map<String, ?> data) {
            if (ops.size() >= MAX_OPS) throw new IllegalStateException("a write group holds at most " + MAX_OPS + " ops");
            ObjectNode o = ops.addObject();
            o.put("table", table);
            o.put("op", op);
            o.set("key", JSON.valueToTree(key));
            if (data != null) o.set("data", JSON.valueToTree(data));
            return this;
        }

        /** {@code hold} (the default), {@code failover} (with its fallback regions) or {@code shed}. */
        public Group policy(String policy, List<String> fallbackRegions) {
            this.policy = policy;
            this.fallbackRegions = List.copyOf(fallbackRegions);
            return this;
        }

        /** The idempotency key (a fresh UUIDv7 unless set; any UUID is accepted). */
        public Group id(UUID id) {
            this.id = id;
            return this;
        }

        public byte[] kafkaKey() {
            return Keys.orderingKey(orderingKey);
        }

        /** The group's WriteEvent JSON. */
        public ObjectNode event() {
            if (ops.isEmpty()) throw new IllegalStateException("a write group needs at least one op");
            ObjectNode ev = JSON.createObjectNode();
            ev.put("id", id.toString());
            ev.put("region", region);
            ev.put("ordering_key", orderingKey);
            ev.set("ops", ops.deepCopy());
            ev.put("policy", policy);
            ev.set("fallback_regions", JSON.valueToTree(fallbackRegions));
            ev.put("created_at", Instant.now().toString());
            return ev;
        }

        /** Publishes the group as one record; the future completes when the broker acknowledged it. */
        public CompletableFuture<RecordMetadata> send() {
            if (sent) throw new IllegalStateException("this write group was already sent");
            ObjectNode ev = event();
            sent = true;
            return producer.send(region, kafkaKey(), ev);
        }
    }
}
