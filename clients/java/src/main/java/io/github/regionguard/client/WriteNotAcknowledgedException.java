package io.github.regionguard.client;

import org.apache.kafka.common.errors.RetriableException;

/**
 * A write Kafka did not acknowledge: its region's brokers are gone, the delivery timeout passed
 * ({@link RegionGuardProducer#DELIVERY_TIMEOUT_MS}), or the broker refused the record. The futures of
 * {@link RegionGuardProducer#write} and {@link RegionGuardProducer.Group#send()} complete with it.
 *
 * <p>{@link #isRetriable()} comes from the cause's type (kafka-clients' {@link RetriableException}:
 * timeouts, leader changes, too few in-sync replicas), never from its message. Send the same event
 * again (same id: the inbox applies each write id once).
 */
public final class WriteNotAcknowledgedException extends RuntimeException {
    private final String region;
    private final String topic;
    private final String writeId;

    public WriteNotAcknowledgedException(String region, String topic, String writeId, Throwable cause) {
        super(oneLine("write " + writeId + " to region " + region + " (topic " + topic + ") not acknowledged (delivery timeout "
                      + RegionGuardProducer.DELIVERY_TIMEOUT_MS / 1000 + " s): "
                      + cause.getClass().getSimpleName() + ": " + cause.getMessage()), cause);
        this.region = region;
        this.topic = topic;
        this.writeId = writeId;
    }

    private static String oneLine(String s) {
        return s.replaceAll("\\s+", " ").trim();
    }

    public String region() {
        return region;
    }

    public String topic() {
        return topic;
    }

    public String writeId() {
        return writeId;
    }

    /** Whether sending the same event again can succeed (kafka-clients says so by the cause's type). */
    public boolean isRetriable() {
        return getCause() instanceof RetriableException;
    }
}
