"""A mosaik scenario that publishes household readings in the original
system's record form, for EdgeMeter's `edge --readings original` test.

Written for EdgeMeter (not taken from the original): one mosaik-csv
simulator per household CSV plays the readings in mosaik time, and an
in-process Kafka-adapter simulator publishes each reading it receives as
the original's producer did: `{"node_id": "household_<id>", "power_value":
<the CSV's milliwatts>}`, no key, no time field (the record's timestamp is
the producer's clock). Every record the broker confirms is written to
--published as one JSON line (node_id, power_value, Kafka timestamp,
partition, offset): the test's oracle is computed from that file.

    python original_form.py --kafka 127.0.0.1:9092 --data data/gem-house-1h \
        --households 3 --until 300 --published published.jsonl
"""

import argparse
import json
import pathlib

import mosaik
import mosaik_api
from confluent_kafka import Producer

TOPIC = "power_topic"


class OriginalKafkaAdapter(mosaik_api.Simulator):
    """Publishes every `power` input at once, in the original's form."""

    def __init__(self):
        super().__init__({
            "type": "event-based",
            "models": {
                "KafkaAdapter": {
                    "public": True,
                    "params": ["kafka", "names", "published"],
                    "attrs": ["power"],
                    "trigger": ["power"],
                },
            },
        })
        self.producer = None
        self.names = {}
        self.log = None
        self.failures = 0

    def create(self, num, model, kafka, names, published):
        assert num == 1 and self.producer is None
        self.producer = Producer({"bootstrap.servers": kafka, "linger.ms": 5})
        self.names = names
        self.log = open(published, "w")
        return [{"eid": "adapter", "type": model}]

    def _delivered(self, error, message):
        if error is not None:
            self.failures += 1
            return
        record = json.loads(message.value())
        record["kafka_ts"] = message.timestamp()[1]
        record["partition"] = message.partition()
        record["offset"] = message.offset()
        self.log.write(json.dumps(record) + "\n")

    def step(self, time, inputs, max_advance):
        for attrs in inputs.values():
            for source, milliwatts in sorted(attrs.get("power", {}).items()):
                value = {"node_id": "household_" + self.names[source], "power_value": int(milliwatts)}
                # No key, no time: exactly what the original published.
                self.producer.produce(TOPIC, json.dumps(value).encode(), on_delivery=self._delivered)
        self.producer.poll(0)
        return None

    def get_data(self, outputs):
        return {}

    def finalize(self):
        # Every confirmation must reach the log: the oracle is made from it.
        remaining = self.producer.flush(120)
        self.log.close()
        if remaining or self.failures:
            raise SystemExit(f"{remaining} records unconfirmed, {self.failures} failed")


def households_with_distinct_seconds(data, count, until):
    """The first `count` CSVs (by id) whose rows in the first `until` seconds
    are at distinct seconds: mosaik-csv steps once per row, by the second."""
    chosen = []
    for path in sorted(pathlib.Path(data).glob("*.csv")):
        lines = path.read_text().splitlines()[2:]
        dates = [line.split(",", 1)[0] for line in lines[: until // 2 + 10]]
        if len(set(dates)) == len(dates):
            chosen.append((path, dates[0]))
        if len(chosen) == count:
            return chosen
    raise SystemExit(f"fewer than {count} households with one row per second")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--mosaik-port", type=int, default=5555,
                        help="where mosaik listens for its simulators (its default: 5555)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--households", type=int, default=3)
    parser.add_argument("--until", type=int, default=300)
    parser.add_argument("--rt-factor", type=float, default=0.05)
    parser.add_argument("--published", required=True)
    args = parser.parse_args()

    world = mosaik.World({
        "CSV": {"python": "mosaik_csv:CSV"},
        "KafkaAdapter": {"python": "__main__:OriginalKafkaAdapter"},
    }, mosaik_config={"addr": ("127.0.0.1", args.mosaik_port)})
    names = {}
    entities = []
    for path, first_date in households_with_distinct_seconds(args.data, args.households, args.until):
        csv = world.start("CSV", sim_start=first_date, datafile=str(path))
        entity = csv.household.create(1)[0]
        names[entity.full_id] = path.stem
        entities.append(entity)
    adapter_sim = world.start("KafkaAdapter")
    adapter = adapter_sim.KafkaAdapter.create(1, kafka=args.kafka, names=names, published=args.published)[0]
    for entity in entities:
        world.connect(entity, adapter, "power")
    # Paced, so that two readings of a household never share a millisecond
    # of the producer's clock, which is the only clock these records have.
    world.run(until=args.until, rt_factor=args.rt_factor)


if __name__ == "__main__":
    main()
