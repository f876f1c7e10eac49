"""Every committed record of the given topics, read with the CloudEvents Python SDK.

The mode of each record is decided as the Kafka protocol binding (section 3) says: structured
when its `content-type` header starts with `application/cloudevents`, binary otherwise. The
SDK's own `from_kafka` guesses by the presence of `ce_*` headers instead, which would accept a
record without any header as structured; so this script decides, and then asks the SDK's
`from_structured` or `from_binary`. The SDK validates the attributes (required ones present,
`subject` and `dataschema` not empty, `time` an RFC 3339 timestamp).

Beyond the SDK: a structured record's content type must be the JSON event format.

Prints, per topic, the number of records and the event types found, as one JSON object on
standard output. Exits 1, naming each failing record on standard error, if any record is not a
valid CloudEvent; 2 on a usage or broker error.
"""

import argparse
import json
import sys

from cloudevents.core.bindings import kafka as binding
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Consumer, KafkaError, TopicPartition

STRUCTURED = "application/cloudevents"
JSON_FORMAT = "application/cloudevents+json"


def broker_error(message):
    print(f"cloudevents-check: {message}", file=sys.stderr)
    sys.exit(2)


def read_all(bootstrap, topic):
    """Every committed record of `topic`, from the beginning to its end when called."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "switchboard-cloudevents-check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    metadata = consumer.list_topics(topic, timeout=30)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        broker_error(f"topic {topic} not found")
    open_partitions = set()
    assignment = []
    for p in metadata.topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            open_partitions.add(p)
            assignment.append(TopicPartition(topic, p, low))
    consumer.assign(assignment)
    records = []
    while open_partitions:
        m = consumer.poll(10)
        if m is None:
            broker_error(f"timed out reading {topic}")
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                open_partitions.discard(m.partition())
                continue
            broker_error(f"reading {topic}: {m.error()}")
        records.append(m)
    consumer.close()
    return records


def event_of(m):
    """The CloudEvent of one record, as the SDK reads it; raises if it is not one."""
    headers = {name: value for name, value in (m.headers() or []) if value is not None}
    message = binding.KafkaMessage(headers=headers, key=m.key(), value=m.value() or b"")
    content_type = next(
        (v.decode("utf-8") for k, v in headers.items() if k.lower() == "content-type"), ""
    )
    if content_type.lower().startswith(STRUCTURED):
        media_type = content_type.split(";")[0].strip().lower()
        if media_type != JSON_FORMAT:
            raise ValueError(f"structured, but not the JSON format: {content_type!r}")
        return binding.from_structured(message, JSONFormat())
    return binding.from_binary(message, JSONFormat())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args()
    summary = {}
    failures = 0
    for topic in args.topics:
        types = set()
        records = read_all(args.bootstrap, topic)
        for m in records:
            try:
                types.add(event_of(m).get_type())
            except Exception as e:  # the SDK raises several kinds; each is a failure here
                failures += 1
                print(
                    f"{topic} {m.partition()}/{m.offset()}: not a CloudEvent: "
                    f"{type(e).__name__}: {e}",
                    file=sys.stderr,
                )
        summary[topic] = {"records": len(records), "types": sorted(types)}
    print(json.dumps(summary, sort_keys=True))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
