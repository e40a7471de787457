package io.github.regionguard.client.cli;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.regionguard.client.Keys;
import io.github.regionguard.client.RegionGuardProducer;
import io.github.regionguard.client.WriteNotAcknowledgedException;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;

/**
 * Command line of the client (the integration tests drive it; docs/clients.md).
 *
 * <pre>
 *   vectors  FILE                        key bytes and partitions of schemas/vectors/partitions.json's rows,
 *                                        as this producer builds and kafka-clients partitions them (JSON on stdout)
 *   produce  BOOTSTRAP PREFIX REGION     one write per stdin line {"table", "op", "key", "data"} (optionally
 *                                        with "ordering_key"), or one atomic group per line {"ordering_key",
 *                                        "ops": [...]}, in order; prints {"sent": n} once all are acknowledged,
 *                                        or one line and exit code 3 if one was not
 *   group-vectors FILE COUNT...          for schemas/vectors/write-events.json's accepted cases with an
 *                                        ordering_key: the event rebuilt with this producer's API, its Kafka
 *                                        key and its partitions for the given partition counts (JSON)
 * </pre>
 *
 * {@code RG_NO_IDEMPOTENCE=1} turns idempotence off for brokers without InitProducerId (the event id
 * still makes a duplicate harmless).
 */
public final class Main {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final TypeReference<LinkedHashMap<String, Object>> MAP = new TypeReference<>() { };

    public static void main(String[] args) throws Exception {
        if (args.length == 2 && args[0].equals("vectors")) {
            vectors(Path.of(args[1]));
        } else if (args.length >= 2 && args[0].equals("group-vectors")) {
            groupVectors(Path.of(args[1]), List.of(args).subList(2, args.length));
        } else if (args.length == 4 && args[0].equals("produce")) {
            try {
                produce(args[1], args[2], args[3]);
            } catch (WriteNotAcknowledgedException e) {  // one line, exit 3 (docs/clients.md, "The command lines")
                System.err.println("error: " + e.getMessage());
                System.exit(3);
            }
        } else {
            System.err.println("usage: vectors FILE | group-vectors FILE COUNT... | produce BOOTSTRAP PREFIX REGION < writes.jsonl");
            System.exit(2);
        }
    }

    static void vectors(Path file) throws Exception {
        JsonNode doc = JSON.readTree(Files.readString(file));
        ArrayNode out = JSON.createArrayNode();
        for (JsonNode v : doc.get("vectors")) {
            byte[] key = Keys.kafkaKey(v.get("table").asText(), JSON.convertValue(v.get("key"), MAP));
            ObjectNode row = out.addObject();
            row.put("key_hex", HexFormat.of().formatHex(key));
            row.put("murmur2", Keys.murmur2(key));
            ObjectNode parts = row.putObject("partition");
            for (JsonNode n : doc.get("partition_counts")) {
                // the producer's own choice for a keyed record with no partitioner.class set
                parts.put(n.asText(), BuiltInPartitioner.partitionForKey(key, n.asInt()));
            }
        }
        System.out.println(JSON.writeValueAsString(out));
    }

    /** The group (or single write with an ordering key) a JSON line or vector describes, built with the API. */
    static RegionGuardProducer.Group group(RegionGuardProducer producer, String region, JsonNode w) {
        RegionGuardProducer.Group g = producer.group(region, w.get("ordering_key").asText());
        for (JsonNode op : w.get("ops")) {
            Map<String, Object> data = op.hasNonNull("data") ? JSON.convertValue(op.get("data"), MAP) : null;
            g.op(op.get("table").asText(), op.get("op").asText(), JSON.convertValue(op.get("key"), MAP), data);
        }
        if (w.hasNonNull("policy")) {
            List<String> fallbacks = new ArrayList<>();
            if (w.has("fallback_regions")) w.get("fallback_regions").forEach(r -> fallbacks.add(r.asText()));
            g.policy(w.get("policy").asText(), fallbacks);
        }
        return g;
    }

    static void groupVectors(Path file, List<String> counts) throws Exception {
        JsonNode doc = JSON.readTree(Files.readString(file));
        String region = doc.get("topic_region").asText();
        ArrayNode out = JSON.createArrayNode();
        // building events needs no broker: the producer is never connected (no send)
        try (RegionGuardProducer producer = new RegionGuardProducer("127.0.0.1:1", "rg.")) {
            for (JsonNode c : doc.get("cases")) {
                if (!"accepted".equals(c.path("outcome").asText()) || !c.has("value_utf8")) continue;
                JsonNode v = JSON.readTree(c.get("value_utf8").asText());
                if (!v.hasNonNull("ordering_key")) continue;
                byte[] key;
                ObjectNode ev;
                if (v.has("ops")) {
                    RegionGuardProducer.Group g = group(producer, region, v);
                    key = g.kafkaKey();
                    ev = g.event();
                } else {
                    String orderingKey = v.get("ordering_key").asText();
                    key = orderingKey.getBytes(StandardCharsets.UTF_8);
                    Map<String, Object> data = v.hasNonNull("data") ? JSON.convertValue(v.get("data"), MAP) : null;
                    ev = RegionGuardProducer.event(RegionGuardProducer.newWriteId(), region, v.get("table").asText(),
                            v.get("op").asText(), JSON.convertValue(v.get("key"), MAP), data, orderingKey);
                }
                ObjectNode row = out.addObject();
                row.put("name", c.get("name").asText());
                row.put("key_hex", HexFormat.of().formatHex(key));
                row.put("murmur2", Utils.murmur2(key));
                ObjectNode parts = row.putObject("partition");
                for (String n : counts) parts.put(n, BuiltInPartitioner.partitionForKey(key, Integer.parseInt(n)));
                row.set("value", ev);
            }
        }
        System.out.println(JSON.writeValueAsString(out));
    }

    static void produce(String bootstrap, String prefix, String region) throws Exception {
        Properties extra = new Properties();
        if ("1".equals(System.getenv("RG_NO_IDEMPOTENCE"))) extra.put("enable.idempotence", "false");
        List<CompletableFuture<RecordMetadata>> sent = new ArrayList<>();
        try (RegionGuardProducer producer = new RegionGuardProducer(bootstrap, prefix, extra);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; ) {
                if (line.isBlank()) continue;
                JsonNode w = JSON.readTree(line);
                if (w.has("ops")) {  // an atomic group: one record keyed by its ordering key
                    sent.add(group(producer, region, w).send());
                } else {
                    Map<String, Object> data = w.hasNonNull("data") ? JSON.convertValue(w.get("data"), MAP) : null;
                    String orderingKey = w.hasNonNull("ordering_key") ? w.get("ordering_key").asText() : null;
                    sent.add(producer.write(region, w.get("table").asText(), w.get("op").asText(),
                                            JSON.convertValue(w.get("key"), MAP), data, orderingKey));
                }
                // a write refused before sending (no metadata within max.block.ms): stop reading, report it
                if (sent.get(sent.size() - 1).isCompletedExceptionally()) break;
            }
            producer.flush();
            for (CompletableFuture<RecordMetadata> f : sent) {  // any failed send fails the run
                try {
                    f.get();
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof WriteNotAcknowledgedException nae) throw nae;
                    throw e;
                }
            }
        }
        System.out.println("{\"sent\": " + sent.size() + "}");
    }
}
