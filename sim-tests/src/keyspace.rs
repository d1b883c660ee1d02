//! The simulated Redis's keyspace: strings, hashes, sets and lists under
//! byte-string keys, with expiry, and the commands the cloud's scripts and
//! readers send, each with real Redis's replies and errors (the text of
//! the error replies included, `WRONGTYPE` first among them). The embedded
//! Lua (`crate::redis`) binds `redis.call` here, and the readers send the
//! same commands, so a script and a reader see one keyspace as they see
//! one in Redis.
//!
//! It owns no time and no run id: the server passes its clock (for
//! expiry, frozen while a script runs, as Redis freezes it) and the run id
//! `INFO server` reports. Everything is kept in ordered maps and sets, so
//! nothing here depends on a hash seed; `SMEMBERS` answers in sorted order
//! (Redis's order is unspecified, and no reader relies on one).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Redis's error for a command on a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    List(VecDeque<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// Server time (ms) at which the key is gone.
    expires_at_ms: Option<u64>,
}

/// One reply, as RESP2 has them.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    fn ok() -> Reply {
        Reply::Status("OK".to_owned())
    }

    fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }
}

#[derive(Debug, Default)]
pub struct Keyspace {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// The server's clock, for expiry.
    now_ms: u64,
}

/// Redis's `string2ll`: an optional `-`, digits, no leading zero (but
/// "0"), no `+`, no spaces; within i64.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && (digits.len() > 1 || digits.len() != text.len()))
    {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn not_an_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

fn arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

extern "C" {
    fn em_hincrbyfloat(
        held: *const u8,
        held_len: usize,
        has_held: i32,
        incr: *const u8,
        incr_len: usize,
        out: *mut u8,
        out_len: usize,
        written: *mut usize,
    ) -> i32;
}

/// HINCRBYFLOAT's new text for a field holding `held`, or its error.
pub fn increment_float(held: Option<&[u8]>, by: &[u8]) -> Result<Vec<u8>, &'static str> {
    // Redis's MAX_LONG_DOUBLE_CHARS: "%.17Lf" of any long double fits.
    let mut out = vec![0u8; 5 * 1024];
    let mut written = 0usize;
    let held_bytes = held.unwrap_or(b"");
    // SAFETY: every pointer comes with its length; `out` has `out.len()`
    // bytes of room, and the C side writes at most that, NUL included.
    let status = unsafe {
        em_hincrbyfloat(
            held_bytes.as_ptr(),
            held_bytes.len(),
            i32::from(held.is_some()),
            by.as_ptr(),
            by.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut written,
        )
    };
    match status {
        0 => {
            out.truncate(written);
            Ok(out)
        }
        1 => Err("ERR value is not a valid float"),
        2 => Err("ERR value is NaN or Infinity"),
        3 => Err("ERR hash value is not a float"),
        4 => Err("ERR increment would produce NaN or Infinity"),
        _ => Err("ERR the sum does not fit"),
    }
}

impl Keyspace {
    /// Sets the server's clock; keys expire by it.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Forgets every key (a restart without persistence).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Forgets every key `doomed` says so of.
    pub fn remove_where(&mut self, mut doomed: impl FnMut(&[u8]) -> bool) {
        self.entries.retain(|key, _| !doomed(key));
    }

    /// Every live key and its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Value)> {
        let now_ms = self.now_ms;
        self.entries
            .iter()
            .filter(move |(_, entry)| entry.expires_at_ms.is_none_or(|at| at > now_ms))
            .map(|(key, entry)| (key.as_slice(), &entry.value))
    }

    /// The live entry under `key`: an expired one is deleted first, as
    /// Redis deletes a key it finds expired on access.
    fn live(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let now_ms = self.now_ms;
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires_at_ms.is_some_and(|at| at <= now_ms))
        {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// The value under `key` if live, for reading.
    pub fn get(&mut self, key: &[u8]) -> Option<&Value> {
        self.live(key).map(|entry| &entry.value)
    }

    /// The hash under `key`, created if missing; `Err` if another type.
    fn hash(&mut self, key: &[u8]) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>, Reply> {
        if self.live(key).is_none() {
            self.entries.insert(
                key.to_vec(),
                Entry {
                    value: Value::Hash(BTreeMap::new()),
                    expires_at_ms: None,
                },
            );
        }
        match &mut self.entries.get_mut(key).expect("just made").value {
            Value::Hash(hash) => Ok(hash),
            _ => Err(Reply::error(WRONGTYPE)),
        }
    }

    fn set(&mut self, key: &[u8]) -> Result<&mut BTreeSet<Vec<u8>>, Reply> {
        if self.live(key).is_none() {
            self.entries.insert(
                key.to_vec(),
                Entry {
                    value: Value::Set(BTreeSet::new()),
                    expires_at_ms: None,
                },
            );
        }
        match &mut self.entries.get_mut(key).expect("just made").value {
            Value::Set(set) => Ok(set),
            _ => Err(Reply::error(WRONGTYPE)),
        }
    }

    fn list(&mut self, key: &[u8]) -> Result<&mut VecDeque<Vec<u8>>, Reply> {
        if self.live(key).is_none() {
            self.entries.insert(
                key.to_vec(),
                Entry {
                    value: Value::List(VecDeque::new()),
                    expires_at_ms: None,
                },
            );
        }
        match &mut self.entries.get_mut(key).expect("just made").value {
            Value::List(list) => Ok(list),
            _ => Err(Reply::error(WRONGTYPE)),
        }
    }

    /// A read of `key` that must be of one type: `Ok(None)` when missing.
    fn read<T>(
        &mut self,
        key: &[u8],
        pick: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>, Reply> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => pick(value).map(Some).ok_or_else(|| Reply::error(WRONGTYPE)),
        }
    }

    /// Drops a collection left empty, as Redis never keeps an empty one.
    fn drop_if_empty(&mut self, key: &[u8]) {
        let empty = match self.entries.get(key).map(|entry| &entry.value) {
            Some(Value::Hash(hash)) => hash.is_empty(),
            Some(Value::Set(set)) => set.is_empty(),
            Some(Value::List(list)) => list.is_empty(),
            _ => false,
        };
        if empty {
            self.entries.remove(key);
        }
    }

    /// Runs one command. `run_id` is what `INFO server` reports.
    pub fn command(&mut self, run_id: &str, args: &[Vec<u8>]) -> Reply {
        let Some((name, rest)) = args.split_first() else {
            return Reply::error("ERR empty command");
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let reply = self.dispatch(&name, rest, run_id);
        // A collection a failed write created stays behind in Redis only
        // if it holds something; the same here.
        if let Some(key) = rest.first() {
            self.drop_if_empty(key);
        }
        reply
    }

    fn dispatch(&mut self, name: &str, args: &[Vec<u8>], run_id: &str) -> Reply {
        let n = args.len();
        match name {
            "PING" if n <= 1 => Reply::Status("PONG".to_owned()),
            "INFO" => Reply::Bulk(
                format!(
                    "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nrun_id:{run_id}\r\n"
                )
                .into_bytes(),
            ),
            "GET" if n == 1 => match self.read(&args[0], |value| match value {
                Value::String(text) => Some(text.clone()),
                _ => None,
            }) {
                Ok(Some(text)) => Reply::Bulk(text),
                Ok(None) => Reply::Nil,
                Err(error) => error,
            },
            "SET" if n >= 2 => self.set_command(args),
            "MGET" if n >= 1 => Reply::Array(
                args.iter()
                    .map(|key| match self.get(key) {
                        Some(Value::String(text)) => Reply::Bulk(text.clone()),
                        _ => Reply::Nil,
                    })
                    .collect(),
            ),
            "DEL" if n >= 1 => {
                let mut removed = 0;
                for key in args {
                    if self.live(key).is_some() {
                        self.entries.remove(key.as_slice());
                        removed += 1;
                    }
                }
                Reply::Integer(removed)
            }
            "TYPE" if n == 1 => Reply::Status(
                match self.get(&args[0]) {
                    None => "none",
                    Some(Value::String(_)) => "string",
                    Some(Value::Hash(_)) => "hash",
                    Some(Value::Set(_)) => "set",
                    Some(Value::List(_)) => "list",
                }
                .to_owned(),
            ),
            "HGET" if n == 2 => match self.read(&args[0], |value| match value {
                Value::Hash(hash) => Some(hash.get(&args[1]).cloned()),
                _ => None,
            }) {
                Ok(Some(Some(text))) => Reply::Bulk(text),
                Ok(_) => Reply::Nil,
                Err(error) => error,
            },
            "HMGET" if n >= 2 => match self.read(&args[0], |value| match value {
                Value::Hash(hash) => Some(
                    args[1..]
                        .iter()
                        .map(|field| hash.get(field).cloned().map_or(Reply::Nil, Reply::Bulk))
                        .collect(),
                ),
                _ => None,
            }) {
                Ok(Some(replies)) => Reply::Array(replies),
                Ok(None) => Reply::Array(vec![Reply::Nil; n - 1]),
                Err(error) => error,
            },
            "HGETALL" if n == 1 => match self.read(&args[0], |value| match value {
                Value::Hash(hash) => Some(
                    hash.iter()
                        .flat_map(|(field, text)| {
                            [Reply::Bulk(field.clone()), Reply::Bulk(text.clone())]
                        })
                        .collect(),
                ),
                _ => None,
            }) {
                Ok(replies) => Reply::Array(replies.unwrap_or_default()),
                Err(error) => error,
            },
            "HSET" if n >= 3 && n % 2 == 1 => match self.hash(&args[0]) {
                Ok(hash) => {
                    let mut added = 0;
                    for pair in args[1..].chunks(2) {
                        if hash.insert(pair[0].clone(), pair[1].clone()).is_none() {
                            added += 1;
                        }
                    }
                    Reply::Integer(added)
                }
                Err(error) => error,
            },
            "HINCRBY" if n == 3 => {
                let Some(by) = parse_integer(&args[2]) else {
                    return not_an_integer();
                };
                let hash = match self.hash(&args[0]) {
                    Ok(hash) => hash,
                    Err(error) => return error,
                };
                let held = match hash.get(&args[1]) {
                    None => 0,
                    Some(text) => match parse_integer(text) {
                        Some(held) => held,
                        None => return Reply::error("ERR hash value is not an integer"),
                    },
                };
                let Some(sum) = held.checked_add(by) else {
                    return Reply::error("ERR increment or decrement would overflow");
                };
                hash.insert(args[1].clone(), sum.to_string().into_bytes());
                Reply::Integer(sum)
            }
            "HINCRBYFLOAT" if n == 3 => {
                // The increment is checked before the key's type, as Redis
                // does.
                if let Err(error) = increment_float(None, &args[2]) {
                    return Reply::error(error);
                }
                let hash = match self.hash(&args[0]) {
                    Ok(hash) => hash,
                    Err(error) => return error,
                };
                match increment_float(hash.get(&args[1]).map(Vec::as_slice), &args[2]) {
                    Ok(text) => {
                        hash.insert(args[1].clone(), text.clone());
                        Reply::Bulk(text)
                    }
                    Err(error) => Reply::error(error),
                }
            }
            "SADD" if n >= 2 => match self.set(&args[0]) {
                Ok(set) => Reply::Integer(
                    args[1..]
                        .iter()
                        .filter(|member| set.insert((*member).clone()))
                        .count() as i64,
                ),
                Err(error) => error,
            },
            "SCARD" if n == 1 => match self.read(&args[0], |value| match value {
                Value::Set(set) => Some(set.len() as i64),
                _ => None,
            }) {
                Ok(count) => Reply::Integer(count.unwrap_or(0)),
                Err(error) => error,
            },
            "SMEMBERS" if n == 1 => match self.read(&args[0], |value| match value {
                Value::Set(set) => Some(set.iter().cloned().map(Reply::Bulk).collect()),
                _ => None,
            }) {
                Ok(members) => Reply::Array(members.unwrap_or_default()),
                Err(error) => error,
            },
            "LPUSH" if n >= 2 => match self.list(&args[0]) {
                Ok(list) => {
                    for value in &args[1..] {
                        list.push_front(value.clone());
                    }
                    Reply::Integer(list.len() as i64)
                }
                Err(error) => error,
            },
            "LLEN" if n == 1 => match self.read(&args[0], |value| match value {
                Value::List(list) => Some(list.len() as i64),
                _ => None,
            }) {
                Ok(length) => Reply::Integer(length.unwrap_or(0)),
                Err(error) => error,
            },
            "LRANGE" if n == 3 => {
                let (Some(start), Some(stop)) = (parse_integer(&args[1]), parse_integer(&args[2]))
                else {
                    return not_an_integer();
                };
                match self.read(&args[0], |value| match value {
                    Value::List(list) => Some(
                        list_range(list.len(), start, stop)
                            .map(|range| range.map(|at| Reply::Bulk(list[at].clone())).collect())
                            .unwrap_or_default(),
                    ),
                    _ => None,
                }) {
                    Ok(items) => Reply::Array(items.unwrap_or_default()),
                    Err(error) => error,
                }
            }
            "LTRIM" if n == 3 => {
                let (Some(start), Some(stop)) = (parse_integer(&args[1]), parse_integer(&args[2]))
                else {
                    return not_an_integer();
                };
                match self.read(&args[0], |value| matches!(value, Value::List(_)).then_some(())) {
                    Ok(None) => Reply::ok(),
                    Ok(Some(())) => {
                        let list = self.list(&args[0]).expect("a list");
                        match list_range(list.len(), start, stop) {
                            Some(range) => {
                                list.truncate(range.end);
                                list.drain(..range.start);
                            }
                            None => list.clear(),
                        }
                        Reply::ok()
                    }
                    Err(error) => error,
                }
            }
            "PING" | "GET" | "SET" | "MGET" | "DEL" | "TYPE" | "HGET" | "HMGET" | "HGETALL"
            | "HSET" | "HINCRBY" | "HINCRBYFLOAT" | "SADD" | "SCARD" | "SMEMBERS" | "LPUSH"
            | "LLEN" | "LRANGE" | "LTRIM" => arity(name),
            _ => Reply::error(format!(
                "ERR unknown command '{}', with args beginning with: ",
                name.to_ascii_lowercase()
            )),
        }
    }

    /// `SET key value [NX|XX] [PX ms|EX s]`.
    fn set_command(&mut self, args: &[Vec<u8>]) -> Reply {
        let (mut nx, mut xx, mut expire_ms) = (false, false, None);
        let mut options = args[2..].iter();
        while let Some(option) = options.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" if !xx => nx = true,
                b"XX" if !nx => xx = true,
                unit @ (b"PX" | b"EX") if expire_ms.is_none() => {
                    let Some(amount) = options.next() else {
                        return Reply::error("ERR syntax error");
                    };
                    let Some(amount) = parse_integer(amount) else {
                        return not_an_integer();
                    };
                    let scale = if unit == b"EX" { 1_000 } else { 1 };
                    if amount <= 0 || amount.checked_mul(scale).is_none() {
                        return Reply::error("ERR invalid expire time in 'set' command");
                    }
                    expire_ms = Some(amount * scale);
                }
                _ => return Reply::error("ERR syntax error"),
            }
        }
        let exists = self.live(&args[0]).is_some();
        if (nx && exists) || (xx && !exists) {
            return Reply::Nil;
        }
        let now_ms = self.now_ms;
        self.entries.insert(
            args[0].clone(),
            Entry {
                value: Value::String(args[1].clone()),
                expires_at_ms: expire_ms.map(|ms| now_ms.saturating_add(ms as u64)),
            },
        );
        Reply::ok()
    }
}

/// LRANGE's and LTRIM's index range over a list of `len`, negative
/// indexes from the end; `None` when empty.
fn list_range(len: usize, start: i64, stop: i64) -> Option<std::ops::Range<usize>> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then(|| start as usize..stop as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn run(keyspace: &mut Keyspace, words: &[&str]) -> Reply {
        keyspace.command("0", &args(words))
    }

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    /// Goal: HINCRBYFLOAT stores what Redis stores: long-double sums,
    /// "%.17Lf" with the zeros cut, integers without a point. The texts
    /// are those redis-server 7.0 answers (checked by hand with
    /// redis-cli, and against RedisCache by the contract suite).
    #[test]
    fn float_increments_are_formatted_as_redis_formats_them() {
        let mut keyspace = Keyspace::default();
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "f", "10.5"]),
            bulk("10.5")
        );
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "f", "0.1"]),
            bulk("10.6")
        );
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "g", "3"]),
            bulk("3")
        );
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "g", "-3"]),
            bulk("0")
        );
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "f", "x"]),
            Reply::error("ERR value is not a valid float")
        );
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "f", "inf"]),
            Reply::error("ERR value is NaN or Infinity")
        );
        run(&mut keyspace, &["HSET", "h", "word", "abc"]);
        assert_eq!(
            run(&mut keyspace, &["HINCRBYFLOAT", "h", "word", "1"]),
            Reply::error("ERR hash value is not a float")
        );
    }

    /// Goal: a command on a key of another type is refused with WRONGTYPE
    /// and changes nothing; reads of a missing key answer as Redis does.
    #[test]
    fn a_key_of_the_wrong_type_is_refused() {
        let mut keyspace = Keyspace::default();
        run(&mut keyspace, &["SET", "k", "v"]);
        for words in [
            &["HINCRBY", "k", "f", "1"][..],
            &["SADD", "k", "m"],
            &["LPUSH", "k", "x"],
            &["HMGET", "k", "f"],
            &["SCARD", "k"],
        ] {
            assert_eq!(
                run(&mut keyspace, words),
                Reply::error(WRONGTYPE),
                "{words:?}"
            );
        }
        assert_eq!(run(&mut keyspace, &["GET", "k"]), bulk("v"));
        assert_eq!(run(&mut keyspace, &["HGET", "none", "f"]), Reply::Nil);
        assert_eq!(
            run(&mut keyspace, &["HMGET", "none", "a", "b"]),
            Reply::Array(vec![Reply::Nil, Reply::Nil])
        );
        assert_eq!(run(&mut keyspace, &["SCARD", "none"]), Reply::Integer(0));
        assert_eq!(
            run(&mut keyspace, &["TYPE", "none"]),
            Reply::Status("none".into())
        );
        assert_eq!(
            run(&mut keyspace, &["HINCRBY", "h", "f", "x"]),
            not_an_integer()
        );
        assert_eq!(
            run(&mut keyspace, &["TYPE", "h"]),
            Reply::Status("none".into())
        );
    }

    /// Goal: SET NX keeps the first value; PX expires by the server's
    /// clock; LPUSH/LTRIM/LRANGE keep the newest first within the bound.
    #[test]
    fn set_nx_expiry_and_lists_behave_as_in_redis() {
        let mut keyspace = Keyspace::default();
        assert_eq!(run(&mut keyspace, &["SET", "k", "a", "NX"]), Reply::ok());
        assert_eq!(run(&mut keyspace, &["SET", "k", "b", "NX"]), Reply::Nil);
        assert_eq!(run(&mut keyspace, &["GET", "k"]), bulk("a"));
        assert_eq!(
            run(&mut keyspace, &["SET", "l", "x", "PX", "100"]),
            Reply::ok()
        );
        keyspace.set_now(99);
        assert_eq!(run(&mut keyspace, &["GET", "l"]), bulk("x"));
        keyspace.set_now(100);
        assert_eq!(run(&mut keyspace, &["GET", "l"]), Reply::Nil);
        assert_eq!(
            run(&mut keyspace, &["SET", "l", "x", "PX", "0"]),
            Reply::error("ERR invalid expire time in 'set' command")
        );
        run(&mut keyspace, &["LPUSH", "r", "1", "2", "3"]);
        run(&mut keyspace, &["LTRIM", "r", "0", "1"]);
        assert_eq!(
            run(&mut keyspace, &["LRANGE", "r", "0", "-1"]),
            Reply::Array(vec![bulk("3"), bulk("2")])
        );
        assert_eq!(parse_integer(b"+1"), None);
        assert_eq!(parse_integer(b"01"), None);
        assert_eq!(parse_integer(b"-0"), None);
        assert_eq!(parse_integer(b"-12"), Some(-12));
    }
}
