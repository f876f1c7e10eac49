//! ObjectIds: validation, and derivation of new ones without randomness.

use sha2::{Digest, Sha256};

/// True for 24 lowercase hexadecimal characters, the platform's ObjectId form.
pub fn is_object_id(s: &str) -> bool {
    // Branch-free over the bytes so it vectorises: this runs several times per message.
    let bytes = s.as_bytes();
    bytes.len() == 24
        && bytes.iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_digit() | (b.wrapping_sub(b'a') < 6))
        })
}

/// The 96 bits of an ObjectId, for allocation-free map keys; `None` if `s` is not one.
pub fn object_id_bits(s: &str) -> Option<u128> {
    if !is_object_id(s) {
        return None;
    }
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(s, &mut bytes[4..]).ok()?;
    Some(u128::from_be_bytes(bytes))
}

/// Derives an ObjectId from its parts. The same parts always give the same ID, so a replay of
/// the same input creates the same messages; parts are length-prefixed so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn derive(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_shape() {
        assert!(is_object_id("590bd49f458b716046347f47"));
        assert!(!is_object_id("590BD49F458B716046347F47"));
        assert!(!is_object_id("590bd49f458b716046347f4"));
        assert!(!is_object_id("590bd49f458b716046347f4g"));
        assert!(!is_object_id(""));
    }

    #[test]
    fn object_id_bits_round_trip() {
        assert_eq!(object_id_bits("0000000000000000000000ff"), Some(255));
        assert_eq!(
            object_id_bits("ffffffffffffffffffffffff"),
            Some((1u128 << 96) - 1)
        );
        assert_eq!(object_id_bits("FFFFFFFFFFFFFFFFFFFFFFFF"), None);
        assert_ne!(
            object_id_bits("590bd49f458b716046347f47"),
            object_id_bits("590bd49f458b716046347f48")
        );
    }

    #[test]
    fn derived_ids_are_object_ids_and_stable() {
        let a = derive(&["590bd49f458b716046347f47", "copy"]);
        assert!(is_object_id(&a));
        assert_eq!(a, derive(&["590bd49f458b716046347f47", "copy"]));
        assert_ne!(derive(&["ab", "c"]), derive(&["a", "bc"]));
    }
}
