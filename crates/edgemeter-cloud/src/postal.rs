//! Postal codes and German states. Each household gets one real postal code,
//! chosen from its id by a fixed hash, so its code and its state never change
//! between requests, restarts or cloud hosts. The original drew a random
//! code per request and a random state per page load.

use edgemeter_wire::PostalCode;
use serde::Serialize;
use std::fmt;

/// The 16 German states (Länder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum GermanState {
    #[serde(rename = "Baden-Württemberg")]
    BadenWuerttemberg,
    #[serde(rename = "Bayern")]
    Bayern,
    #[serde(rename = "Berlin")]
    Berlin,
    #[serde(rename = "Brandenburg")]
    Brandenburg,
    #[serde(rename = "Bremen")]
    Bremen,
    #[serde(rename = "Hamburg")]
    Hamburg,
    #[serde(rename = "Hessen")]
    Hessen,
    #[serde(rename = "Mecklenburg-Vorpommern")]
    MecklenburgVorpommern,
    #[serde(rename = "Niedersachsen")]
    Niedersachsen,
    #[serde(rename = "Nordrhein-Westfalen")]
    NordrheinWestfalen,
    #[serde(rename = "Rheinland-Pfalz")]
    RheinlandPfalz,
    #[serde(rename = "Saarland")]
    Saarland,
    #[serde(rename = "Sachsen")]
    Sachsen,
    #[serde(rename = "Sachsen-Anhalt")]
    SachsenAnhalt,
    #[serde(rename = "Schleswig-Holstein")]
    SchleswigHolstein,
    #[serde(rename = "Thüringen")]
    Thueringen,
}

impl GermanState {
    pub const ALL: [GermanState; 16] = [
        GermanState::BadenWuerttemberg,
        GermanState::Bayern,
        GermanState::Berlin,
        GermanState::Brandenburg,
        GermanState::Bremen,
        GermanState::Hamburg,
        GermanState::Hessen,
        GermanState::MecklenburgVorpommern,
        GermanState::Niedersachsen,
        GermanState::NordrheinWestfalen,
        GermanState::RheinlandPfalz,
        GermanState::Saarland,
        GermanState::Sachsen,
        GermanState::SachsenAnhalt,
        GermanState::SchleswigHolstein,
        GermanState::Thueringen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GermanState::BadenWuerttemberg => "Baden-Württemberg",
            GermanState::Bayern => "Bayern",
            GermanState::Berlin => "Berlin",
            GermanState::Brandenburg => "Brandenburg",
            GermanState::Bremen => "Bremen",
            GermanState::Hamburg => "Hamburg",
            GermanState::Hessen => "Hessen",
            GermanState::MecklenburgVorpommern => "Mecklenburg-Vorpommern",
            GermanState::Niedersachsen => "Niedersachsen",
            GermanState::NordrheinWestfalen => "Nordrhein-Westfalen",
            GermanState::RheinlandPfalz => "Rheinland-Pfalz",
            GermanState::Saarland => "Saarland",
            GermanState::Sachsen => "Sachsen",
            GermanState::SachsenAnhalt => "Sachsen-Anhalt",
            GermanState::SchleswigHolstein => "Schleswig-Holstein",
            GermanState::Thueringen => "Thüringen",
        }
    }

    pub fn from_name(name: &str) -> Option<GermanState> {
        GermanState::ALL
            .into_iter()
            .find(|state| state.name() == name)
    }
}

impl fmt::Display for GermanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Real postal codes of city centres, at least two per state. The state of
/// a code is read from this table, so the pair can never disagree.
const POSTAL_CODES: [(&str, &str, GermanState); 50] = [
    ("70173", "Stuttgart", GermanState::BadenWuerttemberg),
    ("69117", "Heidelberg", GermanState::BadenWuerttemberg),
    (
        "79098",
        "Freiburg im Breisgau",
        GermanState::BadenWuerttemberg,
    ),
    ("76133", "Karlsruhe", GermanState::BadenWuerttemberg),
    ("80331", "München", GermanState::Bayern),
    ("90402", "Nürnberg", GermanState::Bayern),
    ("86150", "Augsburg", GermanState::Bayern),
    ("93047", "Regensburg", GermanState::Bayern),
    ("10115", "Berlin-Mitte", GermanState::Berlin),
    ("10178", "Berlin-Mitte", GermanState::Berlin),
    ("12043", "Berlin-Neukölln", GermanState::Berlin),
    ("14467", "Potsdam", GermanState::Brandenburg),
    ("03046", "Cottbus", GermanState::Brandenburg),
    ("15230", "Frankfurt (Oder)", GermanState::Brandenburg),
    ("28195", "Bremen", GermanState::Bremen),
    ("27568", "Bremerhaven", GermanState::Bremen),
    ("20095", "Hamburg-Altstadt", GermanState::Hamburg),
    ("22767", "Hamburg-Altona", GermanState::Hamburg),
    ("60311", "Frankfurt am Main", GermanState::Hessen),
    ("65183", "Wiesbaden", GermanState::Hessen),
    ("34117", "Kassel", GermanState::Hessen),
    ("64283", "Darmstadt", GermanState::Hessen),
    ("19053", "Schwerin", GermanState::MecklenburgVorpommern),
    ("18055", "Rostock", GermanState::MecklenburgVorpommern),
    ("17489", "Greifswald", GermanState::MecklenburgVorpommern),
    ("30159", "Hannover", GermanState::Niedersachsen),
    ("38100", "Braunschweig", GermanState::Niedersachsen),
    ("49074", "Osnabrück", GermanState::Niedersachsen),
    ("26122", "Oldenburg", GermanState::Niedersachsen),
    ("40213", "Düsseldorf", GermanState::NordrheinWestfalen),
    ("50667", "Köln", GermanState::NordrheinWestfalen),
    ("44135", "Dortmund", GermanState::NordrheinWestfalen),
    ("48143", "Münster", GermanState::NordrheinWestfalen),
    ("55116", "Mainz", GermanState::RheinlandPfalz),
    ("54290", "Trier", GermanState::RheinlandPfalz),
    (
        "67059",
        "Ludwigshafen am Rhein",
        GermanState::RheinlandPfalz,
    ),
    ("66111", "Saarbrücken", GermanState::Saarland),
    ("66538", "Neunkirchen", GermanState::Saarland),
    ("01067", "Dresden", GermanState::Sachsen),
    ("04109", "Leipzig", GermanState::Sachsen),
    ("09111", "Chemnitz", GermanState::Sachsen),
    ("39104", "Magdeburg", GermanState::SachsenAnhalt),
    ("06108", "Halle (Saale)", GermanState::SachsenAnhalt),
    ("06844", "Dessau-Roßlau", GermanState::SachsenAnhalt),
    ("24103", "Kiel", GermanState::SchleswigHolstein),
    ("23552", "Lübeck", GermanState::SchleswigHolstein),
    ("24937", "Flensburg", GermanState::SchleswigHolstein),
    ("99084", "Erfurt", GermanState::Thueringen),
    ("07743", "Jena", GermanState::Thueringen),
    ("99423", "Weimar", GermanState::Thueringen),
];

/// FNV-1a, 64 bit: fixed across processes and platforms, unlike std's
/// randomly seeded hasher.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The household's postal code: the same for the same id, always.
pub fn postal_code_for(node_id: &str) -> PostalCode {
    let index = (stable_hash(node_id.as_bytes()) % POSTAL_CODES.len() as u64) as usize;
    PostalCode::parse(POSTAL_CODES[index].0).expect("the table holds five-digit codes")
}

/// The state a postal code of ours lies in. `None` for a code not in the table.
pub fn state_of(code: PostalCode) -> Option<GermanState> {
    POSTAL_CODES
        .iter()
        .find(|(digits, _, _)| *digits == code.as_str())
        .map(|(_, _, state)| *state)
}

/// Any code from the table, by index: what the planted random-code bug draws.
pub fn postal_code_at(index: usize) -> PostalCode {
    PostalCode::parse(POSTAL_CODES[index % POSTAL_CODES.len()].0).expect("five digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_codes_and_every_code_parses() {
        for state in GermanState::ALL {
            let count = POSTAL_CODES.iter().filter(|(_, _, s)| *s == state).count();
            assert!(count >= 2, "{state} has {count} codes");
            assert_eq!(GermanState::from_name(state.name()), Some(state));
        }
        for (digits, _, state) in POSTAL_CODES {
            let code = PostalCode::parse(digits).unwrap();
            assert_eq!(state_of(code), Some(state));
        }
    }

    #[test]
    fn a_household_keeps_its_code() {
        let id = "8c345400feac9da85eb7884641dbab0e335045984355bb3bdbb1973065e9fcfa";
        assert_eq!(postal_code_for(id), postal_code_for(id));
        // Pinned so that a change of hash or table, which would move every
        // household to another state, shows up here first.
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(state_of(postal_code_for(id)).is_some());
    }
}
