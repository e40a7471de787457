// Partitions of Kafka keys as the JVM's kafka-clients computes them for a keyed record
// (BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % partitions).
// Reads one hex-encoded key per line on stdin, prints "<hex> <murmur2> <p for each count>".
//
//   java -cp kafka-clients.jar Vectors.java 1 3 12 48 < keys.txt
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;

import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;

public class Vectors {
    public static void main(String[] args) throws Exception {
        int[] counts = new int[args.length];
        for (int i = 0; i < args.length; i++) counts[i] = Integer.parseInt(args[i]);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        StringBuilder out = new StringBuilder();
        for (String line; (line = in.readLine()) != null; ) {
            String hex = line.trim();
            if (hex.isEmpty()) continue;
            byte[] key = HexFormat.of().parseHex(hex);
            out.append(hex).append(' ').append(Utils.murmur2(key));
            for (int n : counts) {
                int viaUtils = Utils.toPositive(Utils.murmur2(key)) % n;
                int viaProducer = BuiltInPartitioner.partitionForKey(key, n);
                if (viaUtils != viaProducer) throw new IllegalStateException("partitioner disagrees for " + hex);
                out.append(' ').append(viaProducer);
            }
            out.append('\n');
        }
        System.out.print(out);
    }
}
