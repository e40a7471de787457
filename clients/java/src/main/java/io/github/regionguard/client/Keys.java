package io.github.regionguard.client;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.kafka.common.utils.Utils;

/**
 * The contract's record key and partition rule (docs/contract.md; schemas/vectors/partitions.json).
 *
 * <p>Every producer of a region's writes must put a row's records in the same partition, so the
 * router applies them in order: key {@code <table>/<key values in sorted column order, joined by "/">}
 * (UTF-8), or the event's ordering key when it has one; partition {@code (murmur2(key) & 0x7fffffff) %
 * partitions}, Java's default for a keyed record. murmur2 is kafka-clients' own ({@link Utils#murmur2}),
 * not ours: this class only names the rule so that callers (and the tests on the shared vectors) can
 * compute it without a broker.
 */
public final class Keys {
    private Keys() { }

    /** {@code <table>/<key values in sorted column order, joined by "/">}, UTF-8. */
    public static byte[] kafkaKey(String table, Map<String, ?> key) {
        List<String> parts = new ArrayList<>();
        parts.add(table);
        for (Object value : new TreeMap<>(key).values()) parts.add(String.valueOf(value));
        return String.join("/", parts).getBytes(StandardCharsets.UTF_8);
    }

    /** The ordering key's bytes: the Kafka key of a group or of a write that carries one. */
    public static byte[] orderingKey(String orderingKey) {
        return requireOrderingKey(orderingKey).getBytes(StandardCharsets.UTF_8);
    }

    /** kafka-clients' murmur2 of the key (the value schemas/vectors/partitions.json lists). */
    public static int murmur2(byte[] kafkaKey) {
        return Utils.murmur2(kafkaKey);
    }

    /** The partition of a keyed record among {@code partitions}: {@code (murmur2 & 0x7fffffff) % partitions}. */
    public static int partition(byte[] kafkaKey, int partitions) {
        if (partitions < 1) throw new IllegalArgumentException("partitions must be at least 1, got " + partitions);
        return Utils.toPositive(Utils.murmur2(kafkaKey)) % partitions;
    }

    static String requireOrderingKey(String orderingKey) {
        if (orderingKey == null || orderingKey.isEmpty()) {
            throw new IllegalArgumentException("ordering_key must be a non-empty string");
        }
        return orderingKey;
    }
}
