//! The benchmark workload: interleaved conversation lifecycles. Shared by `benches/core.rs`
//! (criterion, wall-clock) and `examples/core_instructions.rs` (a fixed run for callgrind).

use serde_json::json;
use switchboard::core::directory::MemoryDirectory;

const ORG: &str = "0000000000000000000000a2";
const AGENTS: [&str; 2] = ["0000000000000000000000e1", "0000000000000000000000e2"];
const F1: &str = "0000000000000000000000f1";

/// One conversation's life: the contact writes, it is routed, accepted, answered, annotated,
/// a form is filled and sent, and the agent leaves. 18 messages, every command family but
/// /import (which is rare and proportional to history by definition).
fn lifecycle(n: usize, seq: &mut usize) -> Vec<Vec<u8>> {
    let conversation = format!("{:024x}", 0xc000_0000usize + n);
    let agent = AGENTS[n % 2];
    let mut out = Vec::new();
    let mut push = |mut m: serde_json::Value| {
        *seq += 1;
        m["id"] = json!(format!("{:024x}", *seq));
        m["conversation"] = json!(conversation);
        m["createdAt"] = json!(format!(
            "2024-05-01T{:02}:{:02}:{:02}Z",
            (*seq / 3600) % 24,
            (*seq / 60) % 60,
            *seq % 60
        ));
        out.push(serde_json::to_vec(&m).unwrap());
        m["id"].as_str().unwrap().to_string()
    };
    let first = push(
        json!({"type": "chat", "role": "contact", "text": "Hi, I'd like to trade in my car", "organization": ORG,
        "touchpoint": "web", "contact": {"ip": "203.0.113.7", "email": "sam@example.com"}}),
    );
    push(
        json!({"type": "command", "role": "bot", "sender": "0000000000000000000000b1", "text": "/set @category 1"}),
    );
    push(json!({"type": "command", "role": "agent", "sender": agent, "text": "/notify"}));
    push(json!({"type": "chat", "role": "contact", "text": "Anyone there?"}));
    push(json!({"type": "command", "role": "agent", "sender": agent, "text": "/accept"}));
    push(
        json!({"type": "chat", "role": "agent", "sender": agent, "text": "Hello! Which car is it?"}),
    );
    push(json!({"type": "chat", "role": "contact", "text": "A 2015 Golf, 80k km"}));
    push(
        json!({"type": "command", "role": "agent", "sender": agent, "text": "/action like", "meta": {"message": first}}),
    );
    push(
        json!({"type": "command", "role": "agent", "sender": agent, "text": "/action comment hot lead", "meta": {"message": first}}),
    );
    push(
        json!({"type": "form", "role": "agent", "sender": agent, "text": "+Trade-in", "meta": {"form": F1}}),
    );
    push(
        json!({"type": "field", "role": "agent", "sender": agent, "text": ".make Volkswagen", "meta": {"form": F1}}),
    );
    push(
        json!({"type": "field", "role": "agent", "sender": agent, "text": ".model Golf", "meta": {"form": F1}}),
    );
    push(json!({"type": "command", "role": "agent", "sender": agent, "text": "/send"}));
    push(
        json!({"type": "command", "role": "bot", "sender": "0000000000000000000000b1", "text": "/set @language en"}),
    );
    push(
        json!({"type": "command", "role": "agent", "sender": agent, "text": "/set engagement high"}),
    );
    push(
        json!({"type": "chat", "role": "agent", "sender": agent, "text": "We'll email you an offer today."}),
    );
    push(json!({"type": "command", "role": "agent", "sender": agent, "text": ">crm-sync"}));
    push(json!({"type": "command", "role": "agent", "sender": agent, "text": "/leave"}));
    out
}

/// Lifecycles interleaved round-robin, as many conversations progress at once on a partition.
pub fn workload(conversations: usize) -> Vec<Vec<u8>> {
    let mut seq = 0;
    let lives: Vec<Vec<Vec<u8>>> = (0..conversations).map(|n| lifecycle(n, &mut seq)).collect();
    let len = lives[0].len();
    (0..len)
        .flat_map(|i| lives.iter().map(move |l| l[i].clone()))
        .collect()
}

pub fn directory() -> MemoryDirectory {
    switchboard::directory_file::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/directory.yaml"
    )))
    .unwrap()
}
