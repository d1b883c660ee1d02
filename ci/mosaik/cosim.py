"""A real mosaik world that drives `edgemeter households --mosaik`.

It starts EdgeMeter's households simulator as a mosaik `cmd` simulator,
creates some of its households (which publish their own readings to Kafka
at mosaik time), and connects a foreign simulator of its own (`Load`, a
made-up load whose power is 100 + 10 * (t % 7) W at time t) to
EdgeMeter's `KafkaAdapter`, which publishes it every 2 s. The scenario's
sim_config is the one the README shows.

    python cosim.py --edgemeter target/debug/edgemeter --kafka 127.0.0.1:9092 \
        --data data/gem-house-1h --households 3 --until 300
"""

import argparse

import mosaik
import mosaik_api


class Load(mosaik_api.Simulator):
    """A foreign simulator: one load whose power follows a fixed formula."""

    def __init__(self):
        super().__init__({
            "type": "time-based",
            "models": {"Load": {"public": True, "params": [], "attrs": ["power"]}},
        })
        self.time = 0

    def create(self, num, model):
        return [{"eid": f"load_{index}", "type": model} for index in range(num)]

    def step(self, time, inputs, max_advance):
        self.time = time
        return time + 2

    def get_data(self, outputs):
        return {eid: {"power": 100.0 + 10.0 * (self.time % 7)} for eid in outputs}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edgemeter", required=True)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--mosaik-port", type=int, default=5555,
                        help="where mosaik listens for its simulators (its default: 5555)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--households", type=int, default=3)
    parser.add_argument("--until", type=int, default=300)
    args = parser.parse_args()

    sim_config = {
        "Households": {
            "cmd": f"{args.edgemeter} households --mosaik %(addr)s --kafka {args.kafka} --data {args.data}",
        },
        "Load": {"python": "__main__:Load"},
    }
    # mosaik gives a started simulator 10 s by default to connect and answer
    # init; a loaded CI machine starting a debug build can take longer.
    world = mosaik.World(sim_config, mosaik_config={
        "addr": ("127.0.0.1", args.mosaik_port),
        "start_timeout": 60,
    })
    households = world.start("Households")
    households.Household.create(args.households)
    adapter = households.KafkaAdapter.create(1, step_size=2)[0]
    load = world.start("Load").Load.create(1)[0]
    world.connect(load, adapter, "power")
    world.run(until=args.until)


if __name__ == "__main__":
    main()
