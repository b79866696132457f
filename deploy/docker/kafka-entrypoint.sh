#!/bin/bash
# One KRaft node (broker + controller), the settings of deploy/local/kafka.py's SERVER_PROPERTIES
# with container listeners. Storage is formatted on the first start (KAFKA_CLUSTER_ID or a new id).
set -euo pipefail
data=/var/lib/kafka/data
config=/opt/kafka/config
cat > "$config/server.properties" <<PROPS
process.roles=broker,controller
node.id=${KAFKA_NODE_ID}
controller.quorum.voters=${KAFKA_NODE_ID}@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://0.0.0.0:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://${KAFKA_ADVERTISED_HOST}:${KAFKA_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${data}
num.partitions=${KAFKA_PARTITIONS}
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=${KAFKA_PARTITIONS}
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=${KAFKA_PARTITIONS}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.min.compaction.lag.ms=0
PROPS
cat > "$config/log4j.properties" <<'LOG4J'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.raft=WARN
log4j.logger.kafka.log.LogCleaner=WARN
LOG4J
java=(java "-Dlog4j.configuration=file:$config/log4j.properties" -cp "/opt/kafka/libs/*")
if [ ! -f "$data/meta.properties" ]; then
  id="${KAFKA_CLUSTER_ID:-}"
  while [ -z "$id" ] || [ "${id#-}" != "$id" ]; do  # a Kafka Uuid; never starting with '-'
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$config/server.properties"
fi
# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
exec "${java[@]}" $KAFKA_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true \
  "-Dkafka.logs.dir=/var/lib/kafka" kafka.Kafka "$config/server.properties"
