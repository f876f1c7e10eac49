package switchboard.peer;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of Switchboard's end-to-end benchmark: one stream thread applying every
 * input message to its conversation's state in RocksDB (changelogged), exactly once, emitting a
 * result per message and a notification for contact messages ({@link ConversationProcessor}).
 *
 * <pre>
 * java -jar switchboard-peer.jar BOOTSTRAP APPLICATION_ID INPUT RESULTS NOTIFICATIONS STATE_DIR [COMMIT_INTERVAL_MS]
 * </pre>
 *
 * Prints each state change of the application ({@code peer: state RUNNING}) on stdout, which is
 * how the benchmark knows it is ready.
 */
public final class Peer {
    /** Switchboard's `kafka.batch_max_messages` default (config/default.toml): the same batch. */
    static final int MAX_POLL_RECORDS = 1000;

    private Peer() {}

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 6 || args.length > 7) {
            System.err.println("usage: switchboard-peer BOOTSTRAP APPLICATION_ID INPUT RESULTS"
                    + " NOTIFICATIONS STATE_DIR [COMMIT_INTERVAL_MS (default 100)]");
            System.exit(2);
        }
        String commitMs = args.length == 7 ? args[6] : "100";
        Topology topology = topology(args[2], args[3], args[4]);
        KafkaStreams streams = new KafkaStreams(topology, config(args[0], args[1], args[5], commitMs));
        run(streams);
    }

    /** Input → processor (two stores) → the results and notifications sinks. */
    static Topology topology(String input, String results, String notifications) {
        Topology t = new Topology();
        t.addSource("input", Serdes.String().deserializer(), Serdes.String().deserializer(), input);
        t.addProcessor("apply", ConversationProcessor::new, "input");
        // The conversation document is read and rewritten by every message of its conversation:
        // the record cache (what the DSL's aggregations use by default) writes it to RocksDB and
        // its changelog once per commit instead of once per message.
        t.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(ConversationProcessor.CONVERSATIONS),
                Serdes.String(), Serdes.String()).withCachingEnabled(), "apply");
        // Each message is written once and never read back here: a cache would only copy it.
        t.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(ConversationProcessor.MESSAGES),
                Serdes.String(), Serdes.String()).withCachingDisabled(), "apply");
        t.addSink(ConversationProcessor.RESULTS, results,
                Serdes.String().serializer(), Serdes.String().serializer(), "apply");
        t.addSink(ConversationProcessor.NOTIFICATIONS, notifications,
                Serdes.String().serializer(), Serdes.String().serializer(), "apply");
        return t;
    }

    /** The benchmark's settings; everything else is Kafka Streams' default. */
    static Properties config(String bootstrap, String applicationId, String stateDir, String commitMs) {
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        // Switchboard's guarantee: state, outputs and input offsets in one transaction.
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Integer.parseInt(commitMs));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), MAX_POLL_RECORDS);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.ISOLATION_LEVEL_CONFIG), "read_committed");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    /**
     * Runs until SIGTERM (the shutdown hook closes the application, committing what it has
     * processed) or until the stream thread fails (exit 1).
     */
    static void run(KafkaStreams streams) throws InterruptedException {
        CountDownLatch failed = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println("peer: state " + now);
            System.out.flush();
            if (now == KafkaStreams.State.ERROR) {
                failed.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("peer: stream thread failed: " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> streams.close(Duration.ofSeconds(30))));
        streams.start();
        failed.await();
        System.exit(1);
    }
}
