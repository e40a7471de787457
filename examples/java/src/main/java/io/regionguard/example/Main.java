package io.regionguard.example;

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
import java.util.concurrent.Future;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;

/**
 * Command line of the example.
 *
 * <pre>
 *   vectors  FILE                        key bytes and partitions of schemas/vectors/partitions.json's rows,
 *                                        as this producer builds and kafka-clients partitions them (JSON on stdout)
 *   produce  BOOTSTRAP PREFIX REGION     one write per stdin line {"table", "op", "key", "data"}, in order;
 *                                        prints {"sent": n} once every write is acknowledged
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
        } else if (args.length == 4 && args[0].equals("produce")) {
            produce(args[1], args[2], args[3]);
        } else {
            System.err.println("usage: vectors FILE | produce BOOTSTRAP PREFIX REGION < writes.jsonl");
            System.exit(2);
        }
    }

    static void vectors(Path file) throws Exception {
        JsonNode doc = JSON.readTree(Files.readString(file));
        ArrayNode out = JSON.createArrayNode();
        for (JsonNode v : doc.get("vectors")) {
            byte[] key = RegionGuardProducer.kafkaKey(v.get("table").asText(), JSON.convertValue(v.get("key"), MAP));
            ObjectNode row = out.addObject();
            row.put("key_hex", HexFormat.of().formatHex(key));
            row.put("murmur2", Utils.murmur2(key));
            ObjectNode parts = row.putObject("partition");
            for (JsonNode n : doc.get("partition_counts")) {
                // the producer's own choice for a keyed record with no partitioner.class set
                parts.put(n.asText(), BuiltInPartitioner.partitionForKey(key, n.asInt()));
            }
        }
        System.out.println(JSON.writeValueAsString(out));
    }

    static void produce(String bootstrap, String prefix, String region) throws Exception {
        Properties extra = new Properties();
        if ("1".equals(System.getenv("RG_NO_IDEMPOTENCE"))) extra.put("enable.idempotence", "false");
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (RegionGuardProducer producer = new RegionGuardProducer(bootstrap, prefix, extra);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; ) {
                if (line.isBlank()) continue;
                JsonNode w = JSON.readTree(line);
                Map<String, Object> data = w.hasNonNull("data") ? JSON.convertValue(w.get("data"), MAP) : null;
                sent.add(producer.write(region, w.get("table").asText(), w.get("op").asText(),
                                        JSON.convertValue(w.get("key"), MAP), data));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) f.get();  // any failed send fails the run
        }
        System.out.println("{\"sent\": " + sent.size() + "}");
    }
}
