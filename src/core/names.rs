//! Fantasy names for new conversations ("Brave Otter"), derived from the conversation ID so
//! that a replay names every conversation the same way.

use sha2::{Digest, Sha256};

const ADJECTIVES: [&str; 32] = [
    "Brave", "Calm", "Clever", "Cosmic", "Curious", "Daring", "Eager", "Fearless", "Gentle",
    "Golden", "Happy", "Honest", "Jolly", "Kind", "Lively", "Lucky", "Mellow", "Mighty", "Nimble",
    "Noble", "Patient", "Proud", "Quick", "Quiet", "Radiant", "Shy", "Silent", "Swift", "Tidy",
    "Vivid", "Wise", "Witty",
];

const ANIMALS: [&str; 32] = [
    "Badger", "Bear", "Beaver", "Bison", "Crane", "Dolphin", "Eagle", "Falcon", "Fox", "Gecko",
    "Heron", "Ibis", "Jaguar", "Koala", "Lemur", "Lynx", "Marten", "Moose", "Narwhal", "Ocelot",
    "Otter", "Owl", "Panda", "Puffin", "Raven", "Seal", "Sparrow", "Tiger", "Turtle", "Walrus",
    "Whale", "Wolf",
];

/// The initial name of the conversation with this ID.
pub fn fantasy_name(conversation_id: &str) -> String {
    let digest = Sha256::digest(conversation_id.as_bytes());
    let adjective = ADJECTIVES[usize::from(digest[0]) % ADJECTIVES.len()];
    let animal = ANIMALS[usize::from(digest[1]) % ANIMALS.len()];
    format!("{adjective} {animal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_vary() {
        let a = fantasy_name("590bd49f458b716046347f47");
        assert_eq!(a, fantasy_name("590bd49f458b716046347f47"));
        assert_eq!(a.split(' ').count(), 2);
        let distinct: std::collections::HashSet<_> = (0..200)
            .map(|i| fantasy_name(&format!("{i:024x}")))
            .collect();
        assert!(
            distinct.len() > 100,
            "only {} distinct names",
            distinct.len()
        );
    }
}
