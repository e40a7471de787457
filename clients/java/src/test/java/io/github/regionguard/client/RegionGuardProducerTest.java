package io.github.regionguard.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.producer.MockProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;

/**
 * What the producer hands kafka-clients (its MockProducer: no broker here; the integration tests of the
 * repository run the CLI against a real one), and the events it builds against schemas/vectors/write-events.json.
 */
class RegionGuardProducerTest {
    private static final TypeReference<LinkedHashMap<String, Object>> MAP = new TypeReference<>() { };

    private static MockProducer<byte[], byte[]> mock() {
        return new MockProducer<>(true, null, new ByteArraySerializer(), new ByteArraySerializer());
    }

    @Test
    void aWriteIsOneRecordOnTheRegionsTopicKeyedByItsRow() throws Exception {
        MockProducer<byte[], byte[]> mock = mock();
        try (RegionGuardProducer p = new RegionGuardProducer(mock, "rg.")) {
            p.write("us-east-1", "users", "upsert", Map.of("id", 42), Map.of("name", "Ada", "version", 7)).get();
        }
        assertEquals(1, mock.history().size());
        ProducerRecord<byte[], byte[]> rec = mock.history().get(0);
        assertEquals("rg.writes.us-east-1", rec.topic());
        assertEquals("users/42", new String(rec.key(), StandardCharsets.UTF_8));
        JsonNode ev = Vectors.JSON.readTree(rec.value());
        UUID.fromString(ev.get("id").asText());  // a UUID: the idempotency key
        assertEquals("us-east-1", ev.get("region").asText());
        assertEquals("upsert", ev.get("op").asText());
        assertEquals(42, ev.get("key").get("id").asInt());
        assertEquals("Ada", ev.get("data").get("name").asText());
        assertEquals("hold", ev.get("policy").asText());
        assertTrue(ev.hasNonNull("created_at"));
        assertFalse(ev.has("ordering_key"));
    }

    @Test
    void aWriteKafkaDidNotAcknowledgeFailsWithOneTypedErrorNamingRegionAndTopic() {
        MockProducer<byte[], byte[]> mock = new MockProducer<>(false, null, new ByteArraySerializer(),
                                                               new ByteArraySerializer());
        RegionGuardProducer p = new RegionGuardProducer(mock, "rg.");
        var timedOut = p.write("eu", "users", "upsert", Map.of("id", 1), Map.of("n", 1));
        mock.errorNext(new org.apache.kafka.common.errors.TimeoutException("Expiring 1 record(s)\nafter 30000 ms"));
        var e = assertThrows(java.util.concurrent.ExecutionException.class, timedOut::get);
        var nae = (WriteNotAcknowledgedException) e.getCause();
        assertEquals("eu", nae.region());
        assertEquals("rg.writes.eu", nae.topic());
        assertTrue(nae.isRetriable());  // kafka-clients' TimeoutException is a RetriableException
        assertFalse(nae.getMessage().contains("\n"));
        assertTrue(nae.getMessage().contains("not acknowledged (delivery timeout 30 s)"), nae.getMessage());
        var tooLarge = p.write("eu", "users", "upsert", Map.of("id", 2), Map.of("n", 2));
        mock.errorNext(new org.apache.kafka.common.errors.RecordTooLargeException("too large"));
        var e2 = assertThrows(java.util.concurrent.ExecutionException.class, tooLarge::get);
        assertFalse(((WriteNotAcknowledgedException) e2.getCause()).isRetriable());
    }

    @Test
    void theSettingsEveryLanguageShares() {
        var props = RegionGuardProducer.settings("127.0.0.1:9092", new java.util.Properties());
        assertEquals("all", props.get("acks"));
        assertEquals("true", props.get("enable.idempotence"));
        assertEquals("30000", props.get("delivery.timeout.ms"));
        assertEquals("30000", props.get("max.block.ms"));
        assertEquals("10000", props.get("request.timeout.ms"));
        assertEquals("5", props.get("max.in.flight.requests.per.connection"));
        assertEquals(Integer.toString(Integer.MAX_VALUE), props.get("retries"));
    }

    @Test
    void aWriteWithAnOrderingKeyIsKeyedByIt() throws Exception {
        MockProducer<byte[], byte[]> mock = mock();
        try (RegionGuardProducer p = new RegionGuardProducer(mock, "rg.")) {
            p.write("eu", "orders", "delete", Map.of("id", 7), null, "customer/42").get();
        }
        ProducerRecord<byte[], byte[]> rec = mock.history().get(0);
        assertEquals("customer/42", new String(rec.key(), StandardCharsets.UTF_8));
        JsonNode ev = Vectors.JSON.readTree(rec.value());
        assertEquals("customer/42", ev.get("ordering_key").asText());
        assertFalse(ev.has("data"));
    }

    @Test
    void aGroupIsOneRecordKeyedByItsOrderingKeyWithItsOpsInOrder() throws Exception {
        MockProducer<byte[], byte[]> mock = mock();
        try (RegionGuardProducer p = new RegionGuardProducer(mock, "rg.")) {
            RegionGuardProducer.Group g = p.group("eu", "customer/42")
                    .insert("orders", Map.of("id", 7), Map.of("user_id", 42))
                    .delete("order_items", Map.of("order_id", 7, "line", 1))
                    .policy("failover", List.of("us"));
            g.send().get();
            assertThrows(IllegalStateException.class, g::send);  // a group is sent once
        }
        assertEquals(1, mock.history().size());
        ProducerRecord<byte[], byte[]> rec = mock.history().get(0);
        assertEquals("customer/42", new String(rec.key(), StandardCharsets.UTF_8));
        JsonNode ev = Vectors.JSON.readTree(rec.value());
        assertEquals("insert", ev.get("ops").get(0).get("op").asText());
        assertEquals("delete", ev.get("ops").get(1).get("op").asText());
        assertFalse(ev.get("ops").get(1).has("data"));
        assertEquals("failover", ev.get("policy").asText());
        assertEquals("us", ev.get("fallback_regions").get(0).asText());
    }

    @Test
    void aGroupRefusesNoOpsTooManyOpsAndNoOrderingKey() {
        try (RegionGuardProducer p = new RegionGuardProducer(mock(), "rg.")) {
            assertThrows(IllegalStateException.class, () -> p.group("eu", "k").event());
            assertThrows(IllegalArgumentException.class, () -> p.group("eu", ""));
            RegionGuardProducer.Group g = p.group("eu", "k");
            for (int i = 0; i < RegionGuardProducer.Group.MAX_OPS; i++) g.delete("t", Map.of("id", i));
            assertThrows(IllegalStateException.class, () -> g.delete("t", Map.of("id", -1)));
        }
    }

    /** Each accepted vector case rebuilt with this API has the vector's Kafka key, and its ops in its order. */
    @Test
    void theAcceptedWriteEventVectorsRebuildWithTheirKafkaKeys() throws Exception {
        JsonNode doc = Vectors.read("write-events.json");
        String region = doc.get("topic_region").asText();
        int checked = 0;
        List<String> failures = new ArrayList<>();
        try (RegionGuardProducer p = new RegionGuardProducer(mock(), "rg.")) {
            for (JsonNode c : doc.get("cases")) {
                if (!"accepted".equals(c.path("outcome").asText()) || !c.has("value_utf8") || !c.has("kafka_key")) continue;
                JsonNode v = Vectors.JSON.readTree(c.get("value_utf8").asText());
                byte[] key;
                if (v.has("ops")) {
                    RegionGuardProducer.Group g = p.group(region, v.get("ordering_key").asText());
                    for (JsonNode op : v.get("ops")) {
                        Map<String, Object> data = op.hasNonNull("data") ? Vectors.JSON.convertValue(op.get("data"), MAP) : null;
                        g.op(op.get("table").asText(), op.get("op").asText(), Vectors.JSON.convertValue(op.get("key"), MAP), data);
                    }
                    ObjectNode ev = g.event();
                    assertEquals(v.get("ops"), ev.get("ops"), c.get("name").asText());
                    key = g.kafkaKey();
                } else if (v.hasNonNull("ordering_key")) {
                    key = Keys.orderingKey(v.get("ordering_key").asText());
                } else {
                    key = Keys.kafkaKey(v.get("table").asText(), Vectors.JSON.convertValue(v.get("key"), MAP));
                }
                String want = c.get("kafka_key").asText();
                if (!want.equals(new String(key, StandardCharsets.UTF_8))) failures.add(c.get("name").asText());
                checked++;
            }
        }
        assertTrue(checked > 0, "no accepted case with a kafka_key");
        assertEquals(List.of(), failures);
    }
}
