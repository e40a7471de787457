package io.github.regionguard.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JsonNode;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.junit.jupiter.api.Test;

/** Keys and partitions against schemas/vectors/partitions.json, the vectors every language's client shares. */
class KeysTest {
    private static final TypeReference<LinkedHashMap<String, Object>> MAP = new TypeReference<>() { };

    @Test
    void everyVectorKeyHasTheContractsBytesMurmur2AndPartitions() throws Exception {
        JsonNode doc = Vectors.read("partitions.json");
        assertFalse(doc.get("vectors").isEmpty());
        for (JsonNode v : doc.get("vectors")) {
            Map<String, Object> key = Vectors.JSON.convertValue(v.get("key"), MAP);
            byte[] bytes = Keys.kafkaKey(v.get("table").asText(), key);
            String what = v.get("key_utf8").asText();
            assertEquals(v.get("key_hex").asText(), HexFormat.of().formatHex(bytes), what);
            assertEquals(v.get("murmur2").asInt(), Keys.murmur2(bytes), what);
            for (JsonNode n : doc.get("partition_counts")) {
                int want = v.get("partition").get(n.asText()).asInt();
                assertEquals(want, Keys.partition(bytes, n.asInt()), what + " in " + n.asInt());
                // and kafka-clients' own choice for a keyed record without partitioner.class agrees
                assertEquals(want, BuiltInPartitioner.partitionForKey(bytes, n.asInt()), what + " in " + n.asInt());
            }
        }
    }

    @Test
    void keyValuesJoinInSortedColumnOrderWhateverTheMapsOrder() {
        Map<String, Object> key = new LinkedHashMap<>();
        key.put("tenant", "acme");  // inserted out of column order
        key.put("path", "a/b");
        assertArrayEquals("docs/a/b/acme".getBytes(java.nio.charset.StandardCharsets.UTF_8), Keys.kafkaKey("docs", key));
    }

    @Test
    void anOrderingKeyMustBeANonEmptyString() {
        assertThrows(IllegalArgumentException.class, () -> Keys.orderingKey(""));
        assertThrows(IllegalArgumentException.class, () -> Keys.orderingKey(null));
        assertThrows(IllegalArgumentException.class, () -> Keys.partition(new byte[] {1}, 0));
    }
}
