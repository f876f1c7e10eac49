//! Synthetic traffic from a seeded model of conversation lifecycles, with a directory to match.
//!
//! Each conversation lives through episodes: a contact writes in (the first time with its
//! organization, touchpoint and contact details), a bot may categorise it, an agent or bot may
//! `/notify`, someone may be `/assign`ed or `/follow`, an agent `/accept`s, agent and contact
//! chat, an agent may like or comment on a message, fill in and `/send` a form, `/set` a
//! property, and finally `/leave`s. A few conversations are `/block`ed (and end there), a few
//! `/import` an earlier conversation of their organization. With a message budget above one
//! episode, the contact writes again and a new episode starts.
//!
//! The interleaving is seeded too: up to `concurrency` conversations are open at once, and each
//! next message comes from one of them at random, so every conversation keeps its own order. The
//! k-th message overall is created at `start + k / rate`. Same model, same seed: the same bytes.

use serde_json::{json, Value};

use crate::core::directory::{
    Category, Channel, DirectoryFile, Form, FormField, Organization, User, When, Workflow,
};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub conversations: u64,
    /// Total messages; `None`: one episode per conversation.
    pub messages: Option<u64>,
    /// Messages per second of message time (`createdAt`).
    pub rate: f64,
    pub seed: u64,
    /// Conversations open at the same time.
    pub concurrency: usize,
    /// `createdAt` of the first message, in microseconds since the epoch.
    pub start_micros: i64,
}

impl Model {
    /// Organizations in the directory: one per thousand conversations, between 1 and 100.
    pub fn organizations(&self) -> u64 {
        (self.conversations / 1000).clamp(1, 100)
    }
}

const AGENTS_PER_ORG: u64 = 5;
const CHANNELS_PER_ORG: u64 = 3;

/// IDs are ObjectIds whose first byte says what they are, then 3 bytes of the seed, so traffic
/// of different seeds never collides, then a counter.
fn object_id(kind: u8, seed: u64, n: u64) -> String {
    format!("{kind:02x}{:06x}{n:016x}", seed & 0xff_ffff)
}

pub fn organization_id(seed: u64, n: u64) -> String {
    object_id(0xa0, seed, n)
}
fn channel_id(seed: u64, org: u64, n: u64) -> String {
    object_id(0xc0, seed, org * CHANNELS_PER_ORG + n)
}
fn agent_id(seed: u64, org: u64, n: u64) -> String {
    object_id(0xe0, seed, org * AGENTS_PER_ORG + n)
}
fn bot_id(seed: u64, org: u64) -> String {
    object_id(0xb0, seed, org)
}
fn form_id(seed: u64, org: u64) -> String {
    object_id(0xf0, seed, org)
}
pub fn conversation_id(seed: u64, n: u64) -> String {
    object_id(0xd0, seed, n)
}
fn message_id(seed: u64, conversation: u64, n: u64) -> String {
    // 40 bits of conversation, 24 of message counter.
    object_id(0x10, seed, (conversation << 24) | (n & 0xff_ffff))
}

/// The directory the traffic of `model` is written against.
pub fn directory(model: &Model) -> DirectoryFile {
    let seed = model.seed;
    let mut file = DirectoryFile::default();
    for o in 0..model.organizations() {
        let org = organization_id(seed, o);
        file.organizations.push(Organization {
            id: org.clone(),
            name: format!("Dealer {o}"),
            parent: None,
            categories: vec![
                Category {
                    index: 0,
                    name: "New Car".into(),
                    forms: vec![],
                },
                Category {
                    index: 1,
                    name: "Used Car".into(),
                    forms: vec![form_id(seed, o)],
                },
            ],
            workflows: vec![
                Workflow {
                    name: Some("urgent".into()),
                    when: When {
                        keywords: vec!["urgent".into()],
                        ..When::default()
                    },
                    channels: vec![channel_id(seed, o, 1)],
                    stop: true,
                },
                Workflow {
                    name: Some("used cars".into()),
                    when: When {
                        category_index: Some(1),
                        ..When::default()
                    },
                    channels: vec![channel_id(seed, o, 0), channel_id(seed, o, 2)],
                    stop: false,
                },
            ],
            emails: vec![format!("sales@dealer{o}.example")],
        });
        for (c, (kind, online)) in [("app", true), ("slack", true), ("email", false)]
            .into_iter()
            .enumerate()
        {
            file.channels.push(Channel {
                id: channel_id(seed, o, c as u64),
                organization: org.clone(),
                name: format!("{kind} {o}"),
                kind: kind.into(),
                online,
            });
        }
        for a in 0..AGENTS_PER_ORG {
            file.users.push(User {
                id: agent_id(seed, o, a),
                organization: org.clone(),
                name: format!("Agent {o}.{a}"),
                email: Some(format!("agent{a}@dealer{o}.example")),
            });
        }
        file.users.push(User {
            id: bot_id(seed, o),
            organization: org.clone(),
            name: "Welcome Bot".into(),
            email: None,
        });
        file.forms.push(Form {
            id: form_id(seed, o),
            organization: org,
            name: "Trade-in".into(),
            fields: vec![
                FormField {
                    name: "make".into(),
                    required: true,
                },
                FormField {
                    name: "model".into(),
                    required: true,
                },
            ],
            emails: vec![format!("tradein@dealer{o}.example")],
        });
    }
    file
}

/// One conversation being generated.
struct Conversation {
    n: u64,
    org: u64,
    rng: fastrand::Rng,
    /// Messages left to emit; `u64::MAX` for "one episode".
    budget: u64,
    one_episode: bool,
    /// The rest of the current episode, as (role, sender, type, text, meta), in reverse.
    queue: Vec<Draft>,
    /// How many messages it has sent, and how many episodes it began.
    sent: u64,
    episodes: u64,
    /// Some earlier message IDs, to like and comment on.
    recent: Vec<String>,
    ended: bool,
}

struct Draft {
    role: &'static str,
    kind: &'static str,
    sender: Option<String>,
    text: String,
    meta: Option<Value>,
    /// The first message of the conversation carries organization, touchpoint and contact.
    opening: bool,
    keep_id: bool,
}

impl Draft {
    fn new(role: &'static str, kind: &'static str, sender: Option<String>, text: String) -> Self {
        Draft {
            role,
            kind,
            sender,
            text,
            meta: None,
            opening: false,
            keep_id: false,
        }
    }
    fn meta(mut self, meta: Value) -> Self {
        self.meta = Some(meta);
        self
    }
}

const CONTACT_LINES: [&str; 6] = [
    "Hi, I want to trade in my car",
    "Is the blue Polo still available?",
    "Can I book a test drive on Saturday?",
    "What would my lease cost per month?",
    "This is urgent, my car broke down",
    "Do you have any electric models in stock?",
];
const AGENT_LINES: [&str; 5] = [
    "Happy to help! What car do you drive?",
    "Yes, it is. Shall I reserve it for you?",
    "Saturday at 10 works, see you then",
    "I will send you an offer by email",
    "Thanks for waiting, I am on it",
];
const CONTACT_REPLIES: [&str; 5] = [
    "A 2015 Golf",
    "Yes please",
    "Great, thanks",
    "How long will it take?",
    "Perfect",
];

impl Conversation {
    fn new(model: &Model, n: u64, budget: Option<u64>) -> Self {
        Conversation {
            n,
            org: n % model.organizations(),
            rng: fastrand::Rng::with_seed(model.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            budget: budget.unwrap_or(u64::MAX),
            one_episode: budget.is_none(),
            queue: Vec::new(),
            sent: 0,
            episodes: 0,
            recent: Vec::new(),
            ended: false,
        }
    }

    fn done(&self) -> bool {
        self.budget == 0
            || self.ended
            || (self.one_episode && self.episodes > 0 && self.queue.is_empty())
    }

    /// Plans the next episode.
    fn plan(&mut self, seed: u64, organizations: u64) {
        let first = self.episodes == 0;
        self.episodes += 1;
        let r = &mut self.rng;
        let mut plan: Vec<Draft> = Vec::new();
        let mut opening = Draft::new(
            "contact",
            "chat",
            None,
            CONTACT_LINES[r.usize(..CONTACT_LINES.len())].into(),
        );
        opening.opening = first;
        opening.keep_id = true;
        plan.push(opening);
        let bot = bot_id(seed, self.org);
        if r.f32() < 0.3 {
            let category = if r.bool() { "Used Car" } else { "New Car" };
            plan.push(Draft::new(
                "bot",
                "command",
                Some(bot.clone()),
                format!("/set @category {category}"),
            ));
        }
        let a = agent_id(seed, self.org, r.u64(0..AGENTS_PER_ORG));
        let b = agent_id(seed, self.org, r.u64(0..AGENTS_PER_ORG));
        if r.f32() < 0.6 {
            plan.push(Draft::new(
                "bot",
                "command",
                Some(bot.clone()),
                "/notify".into(),
            ));
        }
        if r.f32() < 0.1 {
            plan.push(
                Draft::new("agent", "command", Some(b.clone()), "/assign".into())
                    .meta(json!({ "users": [a.clone()] })),
            );
        }
        if r.f32() < 0.1 {
            plan.push(Draft::new(
                "agent",
                "command",
                Some(b.clone()),
                "/follow".into(),
            ));
        }
        // Blocks and imports end a conversation's life; with a budget of many episodes they
        // would cut it short, so only single-episode conversations have them.
        let one_episode = self.one_episode;
        if one_episode && r.f32() < 0.03 {
            plan.push(Draft::new(
                "agent",
                "command",
                Some(a.clone()),
                "/block".into(),
            ));
            plan.reverse();
            self.queue = plan;
            return;
        }
        plan.push(Draft::new(
            "agent",
            "command",
            Some(a.clone()),
            "/accept".into(),
        ));
        for i in 0..r.usize(2..=8) {
            if i % 2 == 0 {
                let mut d = Draft::new(
                    "agent",
                    "chat",
                    Some(a.clone()),
                    AGENT_LINES[r.usize(..AGENT_LINES.len())].into(),
                );
                d.keep_id = true;
                plan.push(d);
            } else {
                let mut d = Draft::new(
                    "contact",
                    "chat",
                    None,
                    CONTACT_REPLIES[r.usize(..CONTACT_REPLIES.len())].into(),
                );
                d.keep_id = true;
                plan.push(d);
            }
        }
        // Likes and comments refer to a message sent earlier: resolved when emitted.
        if r.f32() < 0.25 {
            plan.push(Draft::new(
                "agent",
                "command",
                Some(a.clone()),
                "/action like".into(),
            ));
        }
        if r.f32() < 0.1 {
            plan.push(Draft::new(
                "agent",
                "command",
                Some(a.clone()),
                "/action comment Good lead, follow up Friday".into(),
            ));
        }
        if r.f32() < 0.15 {
            let form = form_id(seed, self.org);
            let meta = json!({ "form": form });
            // The form belongs to the "Used Car" category.
            plan.push(Draft::new(
                "bot",
                "command",
                Some(bot.clone()),
                "/set @category Used Car".into(),
            ));
            plan.push(
                Draft::new("agent", "form", Some(a.clone()), "+Trade-in".into()).meta(meta.clone()),
            );
            plan.push(
                Draft::new("agent", "field", Some(a.clone()), ".make Volkswagen".into())
                    .meta(meta.clone()),
            );
            plan.push(
                Draft::new("agent", "field", Some(a.clone()), ".model Golf".into())
                    .meta(meta.clone()),
            );
            plan.push(Draft::new("agent", "command", Some(a.clone()), "/send".into()).meta(meta));
        }
        if r.f32() < 0.2 {
            let set = if r.bool() {
                "/set engagement high"
            } else {
                "/set @language de"
            };
            plan.push(Draft::new("agent", "command", Some(a.clone()), set.into()));
        }
        if one_episode && r.f32() < 0.02 && self.n >= organizations {
            // An earlier conversation of the same organization.
            let origin = conversation_id(seed, self.n - organizations);
            plan.push(Draft::new(
                "agent",
                "command",
                Some(a.clone()),
                format!("/import {origin}"),
            ));
        }
        plan.push(Draft::new("agent", "command", Some(a), "/leave".into()));
        plan.reverse();
        self.queue = plan;
    }

    /// The next message, created at `created_at`.
    fn next(&mut self, seed: u64, organizations: u64, created_at: &str) -> Value {
        if self.queue.is_empty() {
            self.plan(seed, organizations);
        }
        let d = self.queue.pop().expect("planned");
        if d.text == "/block" {
            self.ended = true;
        }
        let id = message_id(seed, self.n, self.sent);
        self.sent += 1;
        self.budget = self.budget.saturating_sub(1);
        let mut m = json!({
            "id": id,
            "conversation": conversation_id(seed, self.n),
            "type": d.kind,
            "role": d.role,
            "text": d.text,
            "createdAt": created_at,
        });
        if let Some(sender) = d.sender {
            m["sender"] = sender.into();
        }
        let mut meta = d.meta;
        if d.text.starts_with("/action") {
            let target = if self.recent.is_empty() {
                id.clone()
            } else {
                self.recent[self.rng.usize(..self.recent.len())].clone()
            };
            meta = Some(json!({ "message": target }));
        }
        if let Some(meta) = meta {
            m["meta"] = meta;
        }
        if d.opening {
            let touchpoint = ["web", "whatsapp", "sms", "email"][self.rng.usize(..4)];
            m["organization"] = organization_id(seed, self.org).into();
            m["touchpoint"] = touchpoint.into();
            let n = self.n;
            m["contact"] = json!({
                "ip": format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
                "email": format!("contact{n}@example.com"),
            });
        }
        if d.keep_id {
            if self.recent.len() >= 8 {
                self.recent.remove(0);
            }
            self.recent.push(id);
        }
        if self.one_episode && self.queue.is_empty() {
            self.budget = 0;
        }
        m
    }
}

/// The traffic of a model, one JSON message at a time.
pub struct Generator {
    model: Model,
    open: Vec<Conversation>,
    /// The next conversation to open.
    next_conversation: u64,
    emitted: u64,
    rng: fastrand::Rng,
}

impl Generator {
    pub fn new(model: Model) -> Self {
        let rng = fastrand::Rng::with_seed(model.seed);
        Generator {
            model,
            open: Vec::new(),
            next_conversation: 0,
            emitted: 0,
            rng,
        }
    }

    /// Budget of conversation `n` when a total is given: spread evenly, the remainder first.
    fn budget(&self, n: u64) -> Option<u64> {
        let total = self.model.messages?;
        let c = self.model.conversations;
        Some(total / c + u64::from(n < total % c))
    }

    fn refill(&mut self) {
        while self.open.len() < self.model.concurrency.max(1)
            && self.next_conversation < self.model.conversations
        {
            let n = self.next_conversation;
            self.next_conversation += 1;
            let c = Conversation::new(&self.model, n, self.budget(n));
            if !c.done() {
                self.open.push(c);
            }
        }
    }

    /// `createdAt` of the k-th message.
    fn time(&self, k: u64) -> String {
        let micros = self.model.start_micros + (k as f64 * 1e6 / self.model.rate) as i64;
        chrono::DateTime::from_timestamp_micros(micros)
            .expect("a time in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl Iterator for Generator {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        self.refill();
        if self.open.is_empty() {
            return None;
        }
        let i = self.rng.usize(..self.open.len());
        let created_at = self.time(self.emitted);
        let (seed, organizations) = (self.model.seed, self.model.organizations());
        let m = self.open[i].next(seed, organizations, &created_at);
        self.emitted += 1;
        if self.open[i].done() {
            self.open.swap_remove(i);
        }
        Some(m)
    }
}
