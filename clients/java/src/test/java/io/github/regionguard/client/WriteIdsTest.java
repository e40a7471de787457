package io.github.regionguard.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.kafka.clients.producer.MockProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;

/** The write ids the producer makes: UUIDv7 (RFC 9562), time-ordered, so the inbox's index grows at one end. */
class WriteIdsTest {
    private static MockProducer<byte[], byte[]> mock() {
        return new MockProducer<>(true, null, new ByteArraySerializer(), new ByteArraySerializer());
    }

    private static UUID idOf(ProducerRecord<byte[], byte[]> rec) throws Exception {
        JsonNode ev = Vectors.JSON.readTree(rec.value());
        return UUID.fromString(ev.get("id").asText());
    }

    /** The id's first 48 bits: its creation time in Unix milliseconds. */
    private static long unixMillis(UUID id) {
        return id.getMostSignificantBits() >>> 16;
    }

    @Test
    void theDefaultIdIsAUuidV7OfItsCreationTime() throws Exception {
        MockProducer<byte[], byte[]> mock = mock();
        long before = System.currentTimeMillis();
        List<UUID> ids = new ArrayList<>();
        try (RegionGuardProducer p = new RegionGuardProducer(mock, "rg.")) {
            p.write("eu", "users", "upsert", Map.of("id", 1), Map.of("n", 1)).get();
            p.write("eu", "users", "upsert", Map.of("id", 1), Map.of("n", 1), "customer/1").get();
            p.group("eu", "customer/42").delete("orders", Map.of("id", 7)).send().get();
        }
        long after = System.currentTimeMillis();
        for (ProducerRecord<byte[], byte[]> rec : mock.history()) ids.add(idOf(rec));
        assertEquals(3, ids.size());
        for (UUID id : ids) {
            assertEquals(7, id.version(), id.toString());
            assertEquals(2, id.variant(), id.toString());  // RFC 9562's variant, bits 10
            long ms = unixMillis(id);
            assertTrue(ms >= before && ms <= after, id + " carries " + ms + " ms, made in [" + before + ", " + after + "]");
        }
    }

    @Test
    void idsMadeInSequenceSortInCreationOrder() throws Exception {
        MockProducer<byte[], byte[]> mock = mock();
        try (RegionGuardProducer p = new RegionGuardProducer(mock, "rg.")) {
            for (int i = 0; i < 1000; i++) p.write("eu", "users", "upsert", Map.of("id", i), Map.of("n", i));
        }
        // PostgreSQL orders uuids by their bytes, as their lower-case text sorts
        List<String> ids = new ArrayList<>();
        for (ProducerRecord<byte[], byte[]> rec : mock.history()) ids.add(idOf(rec).toString());
        for (int i = 1; i < ids.size(); i++) {
            String before = ids.get(i - 1), after = ids.get(i);
            assertTrue(before.compareTo(after) < 0, "id " + i + " of 1,000 made in sequence sorts before its predecessor: "
                       + before + " then " + after);
        }
        assertEquals(1000, new HashSet<>(ids).size());

        UUID first = RegionGuardProducer.newWriteId();
        Thread.sleep(2);
        UUID second = RegionGuardProducer.newWriteId();
        assertTrue(first.toString().compareTo(second.toString()) < 0, first + " then " + second);
        assertTrue(unixMillis(second) - unixMillis(first) >= 2, first + " then " + second);
    }

    @Test
    void anAppSuppliedIdIsKept() throws Exception {
        UUID v4 = UUID.fromString("0b5a3f5e-8f1d-4c3e-9a6b-2d7c1e4f5a6b");  // any UUID is accepted
        MockProducer<byte[], byte[]> mock = mock();
        try (RegionGuardProducer p = new RegionGuardProducer(mock, "rg.")) {
            p.group("eu", "customer/42").id(v4).delete("orders", Map.of("id", 7)).send().get();
            p.send("eu", "users/1".getBytes(java.nio.charset.StandardCharsets.UTF_8),
                   RegionGuardProducer.event(v4, "eu", "users", "delete", Map.of("id", 1), null)).get();
        }
        assertEquals(v4, idOf(mock.history().get(0)));
        assertEquals(v4, idOf(mock.history().get(1)));
    }
}
