//! Planted variants of the scripts (feature `planted-bugs` only): each is
//! the production text with one realistic slip, made by editing the text
//! so that everything else stays the deployed bytes.

use crate::STORE_SCRIPT;

/// The store script with its totals counting resent tuples: the author
/// took each group as [`crate::layout::store_call`] packed it (its tuple
/// count and the sum of all its averages) instead of the tuples the call
/// inserted. A group whose tuples are all resent still moves nothing (the
/// `group.fresh > 0` guard stays), so only a call that mixes new and
/// resent tuples of one household counts the resent ones again: the slip
/// passes every test that stores a batch once or resends it whole.
pub fn store_script_counting_resends() -> String {
    let resum_start = STORE_SCRIPT
        .find("if existing then\n")
        .expect("the store script sums again when some tuples existed");
    let resum_end = STORE_SCRIPT
        .find("local states = {}")
        .expect("the store script then groups the totals by state");
    let counted = "totals.tuples = totals.tuples + group.fresh";
    assert!(STORE_SCRIPT.contains(counted));
    let mut script = String::with_capacity(STORE_SCRIPT.len());
    script.push_str(&STORE_SCRIPT[..resum_start]);
    script.push_str(&STORE_SCRIPT[resum_end..]);
    script.replace(counted, "totals.tuples = totals.tuples + group.count")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the variant differs from the production script in exactly the
    /// slip: no second sum, and the group's count in the state totals.
    #[test]
    fn the_variant_is_the_script_with_one_slip() {
        let variant = store_script_counting_resends();
        assert_ne!(variant, STORE_SCRIPT);
        assert!(!variant.contains("if existing then"));
        assert!(variant.contains("totals.tuples = totals.tuples + group.count"));
        assert!(variant.contains("edge.tuples = edge.tuples + group.fresh"));
        assert!(variant.starts_with("\nlocal function bucket_epoch"));
    }
}
