/*
 * KfcacheNode: one Apache Ignite 2.x server node for kfcache's tests and benchmarks.
 *
 * The node is configured in code (no Spring XML) from system properties set by
 * scripts/ignite.sh, and everything it opens listens on 127.0.0.1 only:
 *
 *   kfcache.cluster        cluster name (instance names are "<cluster>-<index>")
 *   kfcache.index          node index within the cluster, 0-based
 *   kfcache.servers        number of server nodes the cluster should reach before "ready"
 *   kfcache.discoveryPort  first discovery port; the cluster uses port..port+9
 *   kfcache.commPort       this node's communication port
 *   kfcache.clientPort     this node's thin-client port (no port range)
 *   kfcache.regionMb       default data region size in MiB (in-memory, page eviction on)
 *   kfcache.pageSizeKb     page size in KiB (optional, default 16: fewer pages per large value)
 *   kfcache.workDir        this node's work directory
 *   kfcache.readyFile      written once the cluster has `servers` server nodes
 *   kfcache.metricsSec     optional, default 10: every so many seconds (0: never) the node
 *                          prints one KFCACHE-NODE-METRICS line to its log with its data
 *                          region's allocated and used memory, page fill factor and eviction
 *                          rate, and its heap use, so a slow cache can be told from a full one
 *   kfcache.secure         optional, "true": the thin-client port uses TLS with the PKCS#12
 *                          key store kfcache.keyStore (password kfcache.keyStorePassword), and
 *                          authentication is on (default user ignite/ignite). Ignite 2.x only
 *                          authenticates with native persistence, so the region is persistent
 *                          and the node activates the cluster itself.
 *
 * Readiness is decided by the node itself: it writes the ready file once it sees the expected
 * number of server nodes in the topology. The script additionally probes each client port with
 * a thin-client handshake before it calls the cluster ready.
 */

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Collections;

import org.apache.ignite.DataRegionMetrics;
import org.apache.ignite.Ignite;
import org.apache.ignite.Ignition;
import org.apache.ignite.cluster.ClusterState;
import org.apache.ignite.configuration.ClientConnectorConfiguration;
import org.apache.ignite.configuration.DataPageEvictionMode;
import org.apache.ignite.configuration.DataRegionConfiguration;
import org.apache.ignite.configuration.DataStorageConfiguration;
import org.apache.ignite.configuration.IgniteConfiguration;
import org.apache.ignite.failure.NoOpFailureHandler;
import org.apache.ignite.ssl.SslContextFactory;
import org.apache.ignite.spi.communication.tcp.TcpCommunicationSpi;
import org.apache.ignite.spi.discovery.tcp.TcpDiscoverySpi;
import org.apache.ignite.spi.discovery.tcp.ipfinder.vm.TcpDiscoveryVmIpFinder;

public final class KfcacheNode {
    private static String prop(String name) {
        String value = System.getProperty("kfcache." + name);
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException("missing system property -Dkfcache." + name);
        }
        return value;
    }

    private static int intProp(String name) {
        return Integer.parseInt(prop(name));
    }

    public static void main(String[] args) throws Exception {
        String cluster = prop("cluster");
        int index = intProp("index");
        int servers = intProp("servers");
        int discoveryPort = intProp("discoveryPort");
        int commPort = intProp("commPort");
        int clientPort = intProp("clientPort");
        long regionBytes = Long.parseLong(prop("regionMb")) * 1024L * 1024L;
        String workDir = prop("workDir");
        Path readyFile = Paths.get(prop("readyFile"));
        boolean secure = Boolean.parseBoolean(System.getProperty("kfcache.secure", "false"));

        TcpDiscoveryVmIpFinder ipFinder = new TcpDiscoveryVmIpFinder();
        ipFinder.setAddresses(Collections.singletonList(
            "127.0.0.1:" + discoveryPort + ".." + (discoveryPort + 9)));

        TcpDiscoverySpi discovery = new TcpDiscoverySpi();
        discovery.setIpFinder(ipFinder);
        discovery.setLocalAddress("127.0.0.1");
        discovery.setLocalPort(discoveryPort);
        discovery.setLocalPortRange(9);

        TcpCommunicationSpi communication = new TcpCommunicationSpi();
        communication.setLocalAddress("127.0.0.1");
        communication.setLocalPort(commPort);
        communication.setLocalPortRange(0);
        // Ignite's default node-to-node socket buffers are 32 KiB. On loopback (MTU 65536) one
        // segment needs more receive memory than that: the receiver drops it and advertises a
        // zero window, and a backup update waits in the sender's persist timer for minutes
        // while the client's put waits for it (seen as write-throughs stalled for 20-230 s).
        communication.setSocketReceiveBuffer(4 * 1024 * 1024);
        communication.setSocketSendBuffer(4 * 1024 * 1024);

        ClientConnectorConfiguration clientConnector = new ClientConnectorConfiguration();
        clientConnector.setHost("127.0.0.1");
        clientConnector.setPort(clientPort);
        clientConnector.setPortRange(0);
        clientConnector.setSocketSendBufferSize(4 * 1024 * 1024);
        clientConnector.setSocketReceiveBufferSize(4 * 1024 * 1024);
        clientConnector.setTcpNoDelay(true);

        if (secure) {
            SslContextFactory ssl = new SslContextFactory();
            ssl.setKeyStoreType("PKCS12");
            ssl.setKeyStoreFilePath(prop("keyStore"));
            ssl.setKeyStorePassword(prop("keyStorePassword").toCharArray());
            ssl.setTrustManagers(SslContextFactory.getDisabledTrustManager());
            clientConnector.setSslEnabled(true);
            clientConnector.setUseIgniteSslContextFactory(false);
            clientConnector.setSslClientAuth(false);
            clientConnector.setSslContextFactory(ssl);
        }

        // Bounded. In memory, with page eviction so a full region evicts old entries instead
        // of failing the node; persistent (page replacement) when authentication needs it.
        DataRegionConfiguration region = new DataRegionConfiguration();
        region.setName("default");
        region.setInitialSize(Math.min(regionBytes, 64L * 1024L * 1024L));
        region.setMaxSize(regionBytes);
        region.setPersistenceEnabled(secure);
        region.setMetricsEnabled(true);
        if (!secure) {
            region.setPageEvictionMode(DataPageEvictionMode.RANDOM_2_LRU);
        }

        DataStorageConfiguration storage = new DataStorageConfiguration();
        storage.setPageSize(Integer.parseInt(System.getProperty("kfcache.pageSizeKb", "16")) * 1024);
        storage.setDefaultDataRegionConfiguration(region);

        IgniteConfiguration cfg = new IgniteConfiguration();
        cfg.setIgniteInstanceName(cluster + "-" + index);
        cfg.setConsistentId(cluster + "-" + index);
        cfg.setLocalHost("127.0.0.1");
        cfg.setWorkDirectory(workDir);
        cfg.setDiscoverySpi(discovery);
        cfg.setCommunicationSpi(communication);
        cfg.setClientConnectorConfiguration(clientConnector);
        cfg.setDataStorageConfiguration(storage);
        cfg.setPeerClassLoadingEnabled(false);
        // The legacy REST/binary connector is not used by kfcache; keep the node to the
        // discovery, communication and thin-client ports.
        cfg.setConnectorConfiguration(null);
        cfg.setMetricsLogFrequency(0);
        cfg.setAuthenticationEnabled(secure);
        // Test machines are small and shared: a starved thread is not a failure.
        cfg.setSystemWorkerBlockedTimeout(120_000);
        // A test cluster must not halt itself on a critical error (for example a full region):
        // tests should see the error through the client instead.
        cfg.setFailureHandler(new NoOpFailureHandler());

        Ignite ignite = Ignition.start(cfg);

        while (ignite.cluster().forServers().nodes().size() < servers) {
            Thread.sleep(100);
        }
        if (secure && index == 0) {
            ignite.cluster().state(ClusterState.ACTIVE);
        }
        while (ignite.cluster().state() != ClusterState.ACTIVE) {
            Thread.sleep(100);
        }

        String marker = "ready " + cluster + "-" + index + " servers="
            + ignite.cluster().forServers().nodes().size() + " clientPort=" + clientPort + "\n";
        writeAtomically(readyFile, marker);
        System.out.println("KFCACHE-NODE-READY " + marker.trim());
        System.out.flush();
        startMetricsLog(ignite, Integer.parseInt(System.getProperty("kfcache.metricsSec", "10")));
        // The node keeps running on Ignite's own non-daemon threads; TERM runs Ignite's shutdown
        // hook, which stops the node cleanly.
    }

    /** Prints the default region's memory and eviction figures every `seconds` seconds. */
    private static void startMetricsLog(Ignite ignite, int seconds) {
        if (seconds <= 0) {
            return;
        }
        Thread thread = new Thread(() -> {
            long mb = 1024L * 1024L;
            while (true) {
                try {
                    Thread.sleep(seconds * 1000L);
                } catch (InterruptedException stop) {
                    return;
                }
                DataRegionMetrics region = ignite.dataRegionMetrics("default");
                if (region == null) {
                    continue;
                }
                Runtime runtime = Runtime.getRuntime();
                System.out.printf(
                    "KFCACHE-NODE-METRICS %s region=default allocated_mb=%d used_mb=%d fill=%.2f"
                        + " evictions_per_s=%.1f heap_used_mb=%d%n",
                    java.time.Instant.now(),
                    region.getTotalAllocatedSize() / mb,
                    region.getTotalUsedSize() / mb,
                    region.getPagesFillFactor(),
                    region.getEvictionRate(),
                    (runtime.totalMemory() - runtime.freeMemory()) / mb);
                System.out.flush();
            }
        }, "kfcache-metrics-log");
        thread.setDaemon(true);
        thread.start();
    }

    private static void writeAtomically(Path target, String content) throws IOException {
        Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        Files.write(tmp, content.getBytes(StandardCharsets.UTF_8));
        Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
