//! A German postal code (Postleitzahl): exactly five ASCII digits.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostalCode([u8; 5]);

impl PostalCode {
    /// Parses five ASCII digits; anything else is refused.
    pub fn parse(text: &str) -> Option<PostalCode> {
        let bytes: [u8; 5] = text.as_bytes().try_into().ok()?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: [u8; 5]) -> Option<PostalCode> {
        bytes
            .iter()
            .all(u8::is_ascii_digit)
            .then_some(PostalCode(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("postal codes are ASCII digits")
    }

    pub fn as_bytes(&self) -> [u8; 5] {
        self.0
    }
}

impl serde::Serialize for PostalCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for PostalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_five_digits_parse() {
        assert_eq!(PostalCode::parse("10115").unwrap().as_str(), "10115");
        assert_eq!(PostalCode::parse("01067").unwrap().to_string(), "01067");
        assert!(PostalCode::parse("1011").is_none());
        assert!(PostalCode::parse("101155").is_none());
        assert!(PostalCode::parse("1011a").is_none());
    }
}
