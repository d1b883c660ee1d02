//! The simulator behind `edgemeter households --mosaik`: what each mosaik
//! call answers and which readings it publishes.
//!
//! Two models, both time-based:
//! - `Household`: one household of the data set each, taken in id order.
//!   At each step it publishes every reading of its household that has come
//!   due by the step's time (offset from the data set's first reading), with
//!   the reading's own timestamp, and asks to be stepped again at its next
//!   reading. Its `power` output (W) is the last reading published.
//! - `KafkaAdapter`: takes a `power` input (W) from any simulator of the
//!   scenario and publishes each source's value every `step_size` time
//!   units, as that source's reading at the step's time, under the source's
//!   full mosaik id (characters outside `[A-Za-z0-9._-]` become `_`).
//!
//! Time: a mosaik time unit is `time_resolution` seconds (mosaik's
//! `init` argument); time 0 is the data set's first reading.

use edgemeter_wire::{check_id, Reading, ID_BYTES_MAX, POWER_W_MAX};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The mosaik API version this simulator speaks.
pub const API_VERSION: &str = "3.0";

/// The adapter's default step, in time units: the data set's cadence of a
/// reading every two seconds at the default resolution of one second.
pub const ADAPTER_STEP_DEFAULT: i64 = 2;

/// Entities one `create` call may make: far more households than the data
/// sets hold, and it bounds the reply.
pub const CREATE_ENTITIES_MAX: usize = 10_000;

/// What a call answers, and what the driver must do for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The reply's value, or the failure text mosaik shows.
    pub reply: Option<Result<Value, String>>,
    /// Readings to publish, in this order, before replying.
    pub publish: Vec<Reading>,
    /// Adapter inputs that are not readings (not finite, negative, absurd):
    /// each one's reason, for the log; nothing of them is published.
    pub refused: Vec<String>,
    /// mosaik said `stop`: flush what was published, close, exit.
    pub stop: bool,
}

impl Outcome {
    fn reply(value: Value) -> Outcome {
        Outcome {
            reply: Some(Ok(value)),
            ..Outcome::default()
        }
    }

    fn failure(error: String) -> Outcome {
        Outcome {
            reply: Some(Err(error)),
            ..Outcome::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Adapter {
    step: i64,
    next_publish: i64,
}

/// One household of the data set, its readings in time order.
#[derive(Debug, Clone)]
struct Series {
    readings: Vec<Reading>,
    next: usize,
    power_w: f64,
}

#[derive(Debug)]
pub struct Simulator {
    /// Households not yet created, in id order.
    unassigned: std::collections::VecDeque<(String, Vec<Reading>)>,
    households: BTreeMap<String, Series>,
    /// Adapter entities: their step, and the next time they publish, in
    /// time units. The simulator is also stepped at its households'
    /// readings; an adapter publishes only at its own steps.
    adapters: BTreeMap<String, Adapter>,
    /// Milliseconds per mosaik time unit.
    unit_ms: f64,
    /// The data set's first reading: time 0.
    origin_ms: i64,
}

impl Simulator {
    /// A simulator over the data set's households, each with its readings
    /// in time order; `create` hands them out in id order.
    pub fn new(mut households: Vec<(String, Vec<Reading>)>) -> Simulator {
        households.sort_by(|a, b| a.0.cmp(&b.0));
        let origin_ms = households
            .iter()
            .filter_map(|(_, readings)| readings.first().map(|reading| reading.ts_ms))
            .min()
            .unwrap_or(0);
        Simulator {
            unassigned: households.into_iter().collect(),
            households: BTreeMap::new(),
            adapters: BTreeMap::new(),
            unit_ms: 1000.0,
            origin_ms,
        }
    }

    /// Answers one call from mosaik.
    pub fn handle(
        &mut self,
        function: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> Outcome {
        match function {
            "init" => self.init(kwargs),
            "create" => self.create(args, kwargs),
            "setup_done" => Outcome::reply(Value::Null),
            "step" => self.step(args),
            "get_data" => self.get_data(args),
            "stop" => Outcome {
                stop: true,
                ..Outcome::default()
            },
            other => Outcome::failure(format!("edgemeter households has no call `{other}`")),
        }
    }

    fn init(&mut self, kwargs: &Map<String, Value>) -> Outcome {
        let resolution_s = kwargs
            .get("time_resolution")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        if !(resolution_s.is_finite() && resolution_s > 0.0) {
            return Outcome::failure(format!(
                "time_resolution {resolution_s} is not a positive number"
            ));
        }
        self.unit_ms = resolution_s * 1000.0;
        Outcome::reply(json!({
            "api_version": API_VERSION,
            "type": "time-based",
            "models": {
                "Household": {"public": true, "params": [], "attrs": ["power"]},
                "KafkaAdapter": {"public": true, "params": ["step_size"], "attrs": ["power"]},
            },
        }))
    }

    fn create(&mut self, args: &[Value], kwargs: &Map<String, Value>) -> Outcome {
        let num = args.first().and_then(Value::as_u64).unwrap_or(0) as usize;
        if num == 0 || num > CREATE_ENTITIES_MAX {
            return Outcome::failure(format!("create {num} entities (1..={CREATE_ENTITIES_MAX})"));
        }
        match args.get(1).and_then(Value::as_str) {
            Some("Household") => {
                if num > self.unassigned.len() {
                    return Outcome::failure(format!(
                        "{num} households asked for, {} left in the data set",
                        self.unassigned.len()
                    ));
                }
                let entities: Vec<Value> = (0..num)
                    .map(|_| {
                        let (node_id, readings) = self.unassigned.pop_front().expect("counted");
                        let series = Series {
                            readings,
                            next: 0,
                            power_w: 0.0,
                        };
                        self.households.insert(node_id.clone(), series);
                        json!({"eid": node_id, "type": "Household", "rel": []})
                    })
                    .collect();
                Outcome::reply(Value::Array(entities))
            }
            Some("KafkaAdapter") => {
                let step = kwargs
                    .get("step_size")
                    .and_then(Value::as_i64)
                    .unwrap_or(ADAPTER_STEP_DEFAULT);
                if step <= 0 {
                    return Outcome::failure(format!("step_size {step} is not positive"));
                }
                let first = self.adapters.len();
                let entities: Vec<Value> = (first..first + num)
                    .map(|index| {
                        let eid = format!("adapter-{index}");
                        let adapter = Adapter {
                            step,
                            next_publish: 0,
                        };
                        self.adapters.insert(eid.clone(), adapter);
                        json!({"eid": eid, "type": "KafkaAdapter", "rel": []})
                    })
                    .collect();
                Outcome::reply(Value::Array(entities))
            }
            other => Outcome::failure(format!("no model {other:?}: Household or KafkaAdapter")),
        }
    }

    fn step(&mut self, args: &[Value]) -> Outcome {
        let Some(time) = args.first().and_then(Value::as_i64) else {
            return Outcome::failure("step without an integer time".to_owned());
        };
        let until = args.get(2).and_then(Value::as_i64).unwrap_or(time);
        let now_offset_ms = time as f64 * self.unit_ms;
        let mut outcome = Outcome::default();
        let mut next: Option<i64> = None;
        for series in self.households.values_mut() {
            while let Some(reading) = series.readings.get(series.next) {
                let offset_ms = (reading.ts_ms - self.origin_ms) as f64;
                if offset_ms > now_offset_ms {
                    let due = (offset_ms / self.unit_ms).ceil() as i64;
                    next = Some(next.map_or(due, |next| next.min(due)));
                    break;
                }
                series.power_w = reading.power_w;
                outcome.publish.push(reading.clone());
                series.next += 1;
            }
        }
        if let Some(Value::Object(inputs)) = args.get(1) {
            self.adapt(inputs, time, &mut outcome);
        }
        for adapter in self.adapters.values() {
            let due = adapter.next_publish.max(time + 1);
            next = Some(next.map_or(due, |next| next.min(due)));
        }
        // Nothing left to publish: past the end of the run, so never again.
        let next = next.unwrap_or(until + 1).max(time + 1);
        outcome.reply = Some(Ok(json!(next)));
        outcome
    }

    /// Publishes each adapter input as its source's reading at `time`.
    fn adapt(&mut self, inputs: &Map<String, Value>, time: i64, outcome: &mut Outcome) {
        let ts_ms = self.origin_ms + (time as f64 * self.unit_ms).round() as i64;
        for (eid, attrs) in inputs {
            let Some(adapter) = self.adapters.get_mut(eid) else {
                continue;
            };
            if time < adapter.next_publish {
                continue;
            }
            adapter.next_publish = time + adapter.step;
            let Some(Value::Object(sources)) = attrs.get("power") else {
                continue;
            };
            for (source, value) in sources {
                let node_id = node_id_of(source);
                match value
                    .as_f64()
                    .filter(|w| w.is_finite() && (0.0..=POWER_W_MAX).contains(w))
                {
                    Some(power_w) => outcome.publish.push(Reading {
                        node_id,
                        power_w,
                        ts_ms,
                    }),
                    None => outcome.refused.push(format!(
                        "power {value} from {source} is not a reading (0..={POWER_W_MAX} W)"
                    )),
                }
            }
        }
    }

    fn get_data(&self, args: &[Value]) -> Outcome {
        let Some(Value::Object(outputs)) = args.first() else {
            return Outcome::failure("get_data without outputs".to_owned());
        };
        let mut data = Map::new();
        for (eid, attrs) in outputs {
            let Some(series) = self.households.get(eid) else {
                return Outcome::failure(format!("no household entity {eid} has outputs"));
            };
            let mut values = Map::new();
            for attr in attrs.as_array().into_iter().flatten() {
                if attr.as_str() != Some("power") {
                    return Outcome::failure(format!("a household has no attribute {attr}"));
                }
                values.insert("power".to_owned(), json!(series.power_w));
            }
            data.insert(eid.clone(), Value::Object(values));
        }
        Outcome::reply(Value::Object(data))
    }
}

/// A mosaik full id (`Sim-0.entity`) as a household id EdgeMeter accepts.
pub fn node_id_of(source: &str) -> String {
    let mut node_id: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    node_id.truncate(ID_BYTES_MAX);
    if node_id.is_empty() {
        node_id.push('_');
    }
    debug_assert!(check_id(&node_id).is_ok());
    node_id
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_577_145_601_000;

    fn reading(node_id: &str, offset_ms: i64, power_w: f64) -> Reading {
        Reading {
            node_id: node_id.into(),
            power_w,
            ts_ms: T0 + offset_ms,
        }
    }

    fn simulator() -> Simulator {
        Simulator::new(vec![
            (
                "a".into(),
                vec![
                    reading("a", 0, 1.0),
                    reading("a", 1_500, 2.0),
                    reading("a", 4_000, 3.0),
                ],
            ),
            ("b".into(), vec![reading("b", 1_000, 5.0)]),
        ])
    }

    fn call(sim: &mut Simulator, function: &str, args: Value, kwargs: Value) -> Outcome {
        let args = args.as_array().cloned().unwrap_or_default();
        let kwargs = kwargs.as_object().cloned().unwrap_or_default();
        sim.handle(function, &args, &kwargs)
    }

    /// Goal: households publish each reading once, when mosaik time reaches
    /// it, with its own timestamp, and ask for their next reading's step.
    #[test]
    fn households_publish_their_readings_at_their_time() {
        let mut sim = simulator();
        let meta = call(
            &mut sim,
            "init",
            json!(["Households-0"]),
            json!({"time_resolution": 1.0}),
        );
        assert_eq!(meta.reply.unwrap().unwrap()["type"], "time-based");
        let created = call(&mut sim, "create", json!([2, "Household"]), json!({}));
        assert_eq!(created.reply.unwrap().unwrap()[1]["eid"], "b");
        let first = call(&mut sim, "step", json!([0, {}, 300]), json!({}));
        assert_eq!(first.publish, vec![reading("a", 0, 1.0)]);
        assert_eq!(first.reply, Some(Ok(json!(1))));
        let second = call(&mut sim, "step", json!([2, {}, 300]), json!({}));
        assert_eq!(
            second.publish,
            vec![reading("a", 1_500, 2.0), reading("b", 1_000, 5.0)]
        );
        assert_eq!(second.reply, Some(Ok(json!(4))));
        let data = call(&mut sim, "get_data", json!([{"a": ["power"]}]), json!({}));
        assert_eq!(data.reply, Some(Ok(json!({"a": {"power": 2.0}}))));
        let last = call(&mut sim, "step", json!([4, {}, 300]), json!({}));
        assert_eq!(last.publish, vec![reading("a", 4_000, 3.0)]);
        assert_eq!(
            last.reply,
            Some(Ok(json!(301))),
            "nothing left: past the end"
        );
        assert!(call(&mut sim, "stop", json!([]), json!({})).stop);
    }

    /// Goal: the adapter publishes a foreign simulator's power under its
    /// source's id at the step's time, and refuses values that are not
    /// readings without publishing them.
    #[test]
    fn the_adapter_publishes_foreign_power_and_refuses_junk() {
        let mut sim = simulator();
        call(
            &mut sim,
            "init",
            json!(["Households-0"]),
            json!({"time_resolution": 1.0}),
        );
        call(
            &mut sim,
            "create",
            json!([1, "KafkaAdapter"]),
            json!({"step_size": 3}),
        );
        let inputs = json!({"adapter-0": {"power": {"Load-0.load 1": 120.5, "Load-0.bad": -3.0}}});
        let stepped = call(&mut sim, "step", json!([6, inputs.clone(), 300]), json!({}));
        assert_eq!(
            stepped.publish,
            vec![Reading {
                node_id: "Load-0.load_1".into(),
                power_w: 120.5,
                ts_ms: T0 + 6_000
            }]
        );
        assert_eq!(stepped.refused.len(), 1);
        assert_eq!(stepped.reply, Some(Ok(json!(9))));
        let between = call(&mut sim, "step", json!([7, inputs.clone(), 300]), json!({}));
        assert!(
            between.publish.is_empty(),
            "between its steps it publishes nothing"
        );
        let next = call(&mut sim, "step", json!([9, inputs, 300]), json!({}));
        assert_eq!(next.publish.len(), 1);
    }

    #[test]
    fn wrong_calls_fail_with_a_reason() {
        let mut sim = simulator();
        for (function, args) in [
            ("create", json!([3, "Household"])),
            ("create", json!([1, "Battery"])),
            ("create", json!([0, "Household"])),
            ("step", json!(["soon"])),
            ("fly", json!([])),
        ] {
            let outcome = call(&mut sim, function, args, json!({}));
            assert!(matches!(outcome.reply, Some(Err(_))), "{function}");
        }
        assert_eq!(node_id_of("Sim-0.a/b"), "Sim-0.a_b");
    }
}
