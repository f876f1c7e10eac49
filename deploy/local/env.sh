# Shared settings of the local servers; sourced by each server script in deploy/local.
# Every value can be overridden from the environment.

LOCAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LOCAL_ROOT/../.." && pwd)"

# Where jars, data, logs and pid files live (kept out of git by .gitignore).
SWITCHBOARD_LOCAL_DIR="${SWITCHBOARD_LOCAL_DIR:-$REPO_ROOT/.cache/local}"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
# A second listener for the network-fault tests: the broker binds it on KAFKA_FAULTS_PORT but
# advertises it at Toxiproxy's Kafka proxy (KAFKA_PROXY_PORT), so that a client bootstrapping
# through the proxy is told to stay on it, rather than reach the broker directly after its first
# metadata answer.
KAFKA_FAULTS_PORT="${KAFKA_FAULTS_PORT:-19094}"
KAFKA_PROXY_PORT="${KAFKA_PROXY_PORT:-19095}"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# Partitions of every Switchboard topic.
TOPIC_PARTITIONS="${TOPIC_PARTITIONS:-12}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
# How long to wait for a server to become ready, in seconds.
READY_TIMEOUT="${READY_TIMEOUT:-90}"

# The replicated cluster (deploy/local/kafka-cluster): three KRaft nodes, each broker and
# controller; node N (1..3) listens on KAFKA_CLUSTER_PORT+N-1 and its controller on
# KAFKA_CLUSTER_CONTROLLER_PORT+N-1. Smaller heaps than the single broker's: three share the
# machine.
KAFKA_CLUSTER_PORT="${KAFKA_CLUSTER_PORT:-29092}"
KAFKA_CLUSTER_CONTROLLER_PORT="${KAFKA_CLUSTER_CONTROLLER_PORT:-29192}"
KAFKA_CLUSTER_BOOTSTRAP="127.0.0.1:$KAFKA_CLUSTER_PORT,127.0.0.1:$((KAFKA_CLUSTER_PORT + 1)),127.0.0.1:$((KAFKA_CLUSTER_PORT + 2))"
KAFKA_CLUSTER_HEAP_OPTS="${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx512m}"

# The SASL/SCRAM-over-TLS broker (deploy/local/kafka-sasl): its SASL_SSL listener and its
# controller's port. The script makes its CA, certificate and SCRAM user under
# $SWITCHBOARD_LOCAL_DIR/kafka-sasl.
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-29292}"
KAFKA_SASL_CONTROLLER_PORT="${KAFKA_SASL_CONTROLLER_PORT:-29293}"
KAFKA_SASL_BOOTSTRAP="127.0.0.1:$KAFKA_SASL_PORT"
KAFKA_SASL_HEAP_OPTS="${KAFKA_SASL_HEAP_OPTS:--Xms128m -Xmx512m}"

REDIS_PORT="${REDIS_PORT:-16379}"
# Redis Cluster (deploy/local/redis-cluster): REDIS_CLUSTER_NODES nodes on consecutive ports from
# REDIS_CLUSTER_PORT, with REDIS_CLUSTER_REPLICAS replicas per master (6 and 1: 3 masters).
REDIS_CLUSTER_PORT="${REDIS_CLUSTER_PORT:-17000}"
REDIS_CLUSTER_NODES="${REDIS_CLUSTER_NODES:-6}"
REDIS_CLUSTER_REPLICAS="${REDIS_CLUSTER_REPLICAS:-1}"
# Redis Sentinel (deploy/local/redis-sentinel): a primary and a replica from REDIS_SENTINEL_DATA_PORT,
# three Sentinels from REDIS_SENTINEL_PORT, watching the service REDIS_SENTINEL_SERVICE.
REDIS_SENTINEL_DATA_PORT="${REDIS_SENTINEL_DATA_PORT:-17100}"
REDIS_SENTINEL_PORT="${REDIS_SENTINEL_PORT:-26379}"
REDIS_SENTINEL_SERVICE="${REDIS_SENTINEL_SERVICE:-switchboard}"

# Toxiproxy (deploy/local/toxiproxy): its HTTP API, and where its Redis proxy listens. Its
# binary is built once per version into SWITCHBOARD_TOOLS_DIR, shared by every checkout.
SWITCHBOARD_TOOLS_DIR="${SWITCHBOARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}"
TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.12.0}"
TOXIPROXY_PORT="${TOXIPROXY_PORT:-18474}"
REDIS_PROXY_PORT="${REDIS_PROXY_PORT:-16380}"

# The topics of SPEC section 1 (default names).
SWITCHBOARD_TOPICS=(
  conversation.messages
  channel.notifications
  channel.dequeues
  inbox.notifications
  email.notifications
  message.deliveries
  command.results
  bot.commands
  conversation.messages.dlq
)

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "$*"; exit 1; }

# apt-get install, once per run, only when something is missing.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing $*, and no apt-get to install it with"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "${_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# Alive process from a pid file?
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops the process of a pid file: TERM, then KILL after a grace period.
stop_pid() {
  local pidfile=$1 name=$2 grace=${3:-30}
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    log "$name is not running"
    return 0
  fi
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq "$grace"); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "$name stopped"; return 0; }
    sleep 1
  done
  log "$name did not stop in ${grace}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}
