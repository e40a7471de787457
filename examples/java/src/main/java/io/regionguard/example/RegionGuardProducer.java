package io.regionguard.example;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.Future;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Publishes regionguard write events by the contract (DESIGN.md, README "From any language"):
 * topic {@code <prefix>writes.<region>}, Kafka key {@code <table>/<key values in sorted column order,
 * joined by "/">} (UTF-8), kafka-clients' default partitioner (murmur2 of the key: the contract's),
 * value a WriteEvent JSON with a fresh UUID as its idempotency key, {@code acks=all} and idempotence.
 *
 * <pre>{@code
 * try (var p = new RegionGuardProducer("127.0.0.1:9092", "rg.")) {
 *     p.write("us-east-1", "users", "upsert", Map.of("id", 42), Map.of("name", "Ada", "version", 7));
 * } // close() flushes: the writes are acknowledged once it returns
 * }</pre>
 */
public final class RegionGuardProducer implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final KafkaProducer<byte[], byte[]> producer;
    private final String topicPrefix;

    public RegionGuardProducer(String bootstrap, String topicPrefix) {
        this(bootstrap, topicPrefix, new Properties());
    }

    /** {@code extra} is passed to kafka-clients as is (security.protocol, sasl.*, ssl.*, ...). */
    public RegionGuardProducer(String bootstrap, String topicPrefix, Properties extra) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.putAll(extra);
        // no partitioner.class: kafka-clients' built-in one hashes the key with murmur2, as the contract says
        this.producer = new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer());
        this.topicPrefix = topicPrefix;
    }

    /** The contract's Kafka key: {@code <table>/<key values in sorted column order, joined by "/">}, UTF-8. */
    public static byte[] kafkaKey(String table, Map<String, ?> key) {
        List<String> parts = new ArrayList<>();
        parts.add(table);
        for (Object value : new TreeMap<>(key).values()) parts.add(String.valueOf(value));
        return String.join("/", parts).getBytes(StandardCharsets.UTF_8);
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

    public String topic(String region) {
        return topicPrefix + "writes." + region;
    }

    /** Sends one write; the returned future completes when the broker acknowledged it. */
    public Future<RecordMetadata> write(String region, String table, String op, Map<String, ?> key,
                                        Map<String, ?> data) {
        return send(region, kafkaKey(table, key), event(UUID.randomUUID(), region, table, op, key, data));
    }

    public Future<RecordMetadata> send(String region, byte[] kafkaKey, ObjectNode event) {
        try {
            return producer.send(new ProducerRecord<>(topic(region), kafkaKey, JSON.writeValueAsBytes(event)));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException("event is not JSON-serialisable", e);
        }
    }

    public void flush() {
        producer.flush();
    }

    @Override
    public void close() {
        producer.close();
    }
}
