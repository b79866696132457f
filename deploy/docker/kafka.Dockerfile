# Apache Kafka (KRaft, one combined broker + controller) from Debian's Java 17 and the broker jars
# the local stack uses: deploy/local/pom.xml, fetched from Maven Central by
# deploy.local.kafka.ensure_jars() on the host. `make kafka-image` streams them in as kafka-libs/.
# The public equivalent is apache/kafka.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN set -eu; \
    mkdir -p /usr/share/man/man1; \
    apt-get update -q; \
    apt-get install -y -q --no-install-recommends openjdk-17-jre-headless tini; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    useradd --system --uid 10002 --user-group --home-dir /var/lib/kafka --shell /usr/sbin/nologin kafka; \
    install -d -o kafka -g kafka /var/lib/kafka /var/lib/kafka/data /opt/kafka/config
COPY kafka-libs/ /opt/kafka/libs/
COPY deploy/docker/kafka-entrypoint.sh /usr/local/bin/kafka-entrypoint
ENV KAFKA_NODE_ID=1 \
    KAFKA_ADVERTISED_HOST=kafka \
    KAFKA_PORT=9092 \
    KAFKA_CONTROLLER_PORT=9093 \
    KAFKA_PARTITIONS=6 \
    KAFKA_HEAP_OPTS="-Xms256m -Xmx1g"
USER kafka:kafka
VOLUME /var/lib/kafka/data
EXPOSE 9092
# The client listener accepts connections once the broker has loaded its metadata; clients
# (the topics job: deploy.local.kafka.wait_ready) still wait for a metadata answer.
HEALTHCHECK --interval=3s --timeout=3s --start-period=60s --retries=10 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${KAFKA_PORT}"]
LABEL loyalty.image=kafka
ENTRYPOINT ["tini", "--", "kafka-entrypoint"]
