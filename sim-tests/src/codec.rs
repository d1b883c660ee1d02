//! A tiny big-endian byte codec for the simulation's own protocols (broker
//! and simulated Redis). The edge-cloud link carries `edgemeter-wire` bytes
//! unchanged; these helpers only serve the hosts that stand in for Kafka and
//! Redis, which have no wire format of their own in the project.
//!
//! Every read checks the remaining length before it takes bytes, and every
//! length prefix is checked against [`FIELD_BYTES_MAX`] before allocating.

use std::io;

/// The longest byte string one field may carry. A Kafka record here is a
/// reading of under 200 bytes; a household id is at most 128 bytes.
pub const FIELD_BYTES_MAX: usize = 64 * 1024;

/// The most items one list field may carry: a fetch or produce batch, or a
/// dump of cached tuples. 50 households × 1 hour is about 90,000 readings and
/// 36,000 tuples; a list is a batch of those, never the whole set at once.
pub const LIST_ITEMS_MAX: usize = 100_000;

pub fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Appends fixed-width fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { bytes: Vec::new() }
    }

    pub fn u8(&mut self, value: u8) -> &mut Writer {
        self.bytes.push(value);
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn i32(&mut self, value: i32) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn i64(&mut self, value: i64) -> &mut Writer {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// An `f64` by its bits, so it round-trips exactly.
    pub fn f64(&mut self, value: f64) -> &mut Writer {
        self.u64(value.to_bits())
    }

    pub fn bytes(&mut self, value: &[u8]) -> &mut Writer {
        assert!(value.len() <= FIELD_BYTES_MAX, "field over its limit");
        self.u32(value.len() as u32);
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn str(&mut self, value: &str) -> &mut Writer {
        self.bytes(value.as_bytes())
    }

    /// A list length, checked against [`LIST_ITEMS_MAX`].
    pub fn count(&mut self, count: usize) -> &mut Writer {
        assert!(count <= LIST_ITEMS_MAX, "list over its limit");
        self.u32(count as u32)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Takes fixed-width fields off a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    fn take(&mut self, count: usize) -> io::Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| invalid("message ends early"))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> io::Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let length = self.u32()? as usize;
        if length > FIELD_BYTES_MAX {
            return Err(invalid(format!("field of {length} bytes")));
        }
        Ok(self.take(length)?.to_vec())
    }

    pub fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| invalid("string is not UTF-8"))
    }

    pub fn count(&mut self) -> io::Result<usize> {
        let count = self.u32()? as usize;
        if count > LIST_ITEMS_MAX {
            return Err(invalid(format!("list of {count} items")));
        }
        Ok(count)
    }

    pub fn finish(self) -> io::Result<()> {
        if self.position != self.bytes.len() {
            return Err(invalid("trailing bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_input_is_refused() {
        let bytes = Writer::new()
            .u8(7)
            .u32(9)
            .i64(-3)
            .f64(0.1)
            .str("house")
            .finish();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8().unwrap(), 7);
        assert_eq!(reader.u32().unwrap(), 9);
        assert_eq!(reader.i64().unwrap(), -3);
        assert_eq!(reader.f64().unwrap().to_bits(), 0.1f64.to_bits());
        assert_eq!(reader.string().unwrap(), "house");
        reader.finish().unwrap();
        let mut short = Reader::new(&bytes[..3]);
        assert!(short.u32().is_err());
        let huge = Writer::new().u32(u32::MAX).finish();
        assert!(Reader::new(&huge).bytes().is_err());
    }
}
