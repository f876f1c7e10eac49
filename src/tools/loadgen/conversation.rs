//! One conversation's life, planned an episode at a time from its own seeded generator and
//! emitted a message at a time.
//!
//! The order of the generator's draws is the output: reordering two of them changes every
//! file made from a seed.

use serde_json::{json, Value};

use super::model::{
    agent_id, bot_id, conversation_id, form_id, message_id, organization_id, Model, AGENTS_PER_ORG,
};

/// One conversation being generated.
pub(super) struct Conversation {
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
    fn agent(kind: &'static str, agent: &str, text: &str) -> Self {
        Draft::new("agent", kind, Some(agent.to_string()), text.into())
    }
    fn bot(bot: &str, text: String) -> Self {
        Draft::new("bot", "command", Some(bot.to_string()), text)
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

/// Who acts in one episode: the organization's bot and two of its agents (`a` handles the
/// conversation, `b` assigns and follows).
struct Cast {
    bot: String,
    a: String,
    b: String,
}

impl Conversation {
    pub(super) fn new(model: &Model, n: u64, budget: Option<u64>) -> Self {
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

    pub(super) fn done(&self) -> bool {
        self.budget == 0
            || self.ended
            || (self.one_episode && self.episodes > 0 && self.queue.is_empty())
    }

    /// Plans the next episode.
    fn plan(&mut self, seed: u64, organizations: u64) {
        let first = self.episodes == 0;
        self.episodes += 1;
        let one_episode = self.one_episode;
        let r = &mut self.rng;
        let bot = bot_id(seed, self.org);
        let mut plan = opening(r, first, &bot);
        let cast = Cast {
            a: agent_id(seed, self.org, r.u64(0..AGENTS_PER_ORG)),
            b: agent_id(seed, self.org, r.u64(0..AGENTS_PER_ORG)),
            bot,
        };
        routing(r, &cast, &mut plan);
        // Blocks and imports end a conversation's life; with a budget of many episodes they
        // would cut it short, so only single-episode conversations have them.
        if one_episode && r.f32() < 0.03 {
            plan.push(Draft::agent("command", &cast.a, "/block"));
        } else {
            exchange(r, &cast, &mut plan);
            extras(r, &cast, form_id(seed, self.org), &mut plan);
            if one_episode && r.f32() < 0.02 && self.n >= organizations {
                // An earlier conversation of the same organization.
                let origin = conversation_id(seed, self.n - organizations);
                plan.push(Draft::agent(
                    "command",
                    &cast.a,
                    &format!("/import {origin}"),
                ));
            }
            plan.push(Draft::agent("command", &cast.a, "/leave"));
        }
        plan.reverse();
        self.queue = plan;
    }

    /// The next message, created at `created_at`.
    pub(super) fn next(&mut self, seed: u64, organizations: u64, created_at: &str) -> Value {
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
            self.open(seed, &mut m);
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

    /// What only the conversation's first message carries: organization, touchpoint, contact.
    fn open(&mut self, seed: u64, m: &mut Value) {
        let touchpoint = ["web", "whatsapp", "sms", "email"][self.rng.usize(..4)];
        m["organization"] = organization_id(seed, self.org).into();
        m["touchpoint"] = touchpoint.into();
        let n = self.n;
        m["contact"] = json!({
            "ip": format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
            "email": format!("contact{n}@example.com"),
        });
    }
}

/// The contact writes in; a bot may categorise the conversation.
fn opening(r: &mut fastrand::Rng, first: bool, bot: &str) -> Vec<Draft> {
    let mut opening = Draft::new(
        "contact",
        "chat",
        None,
        CONTACT_LINES[r.usize(..CONTACT_LINES.len())].into(),
    );
    opening.opening = first;
    opening.keep_id = true;
    let mut plan = vec![opening];
    if r.f32() < 0.3 {
        let category = if r.bool() { "Used Car" } else { "New Car" };
        plan.push(Draft::bot(bot, format!("/set @category {category}")));
    }
    plan
}

/// A bot may notify; someone may be assigned, an agent may follow.
fn routing(r: &mut fastrand::Rng, cast: &Cast, plan: &mut Vec<Draft>) {
    if r.f32() < 0.6 {
        plan.push(Draft::bot(&cast.bot, "/notify".into()));
    }
    if r.f32() < 0.1 {
        plan.push(
            Draft::agent("command", &cast.b, "/assign").meta(json!({ "users": [cast.a.clone()] })),
        );
    }
    if r.f32() < 0.1 {
        plan.push(Draft::agent("command", &cast.b, "/follow"));
    }
}

/// The agent accepts, and agent and contact chat.
fn exchange(r: &mut fastrand::Rng, cast: &Cast, plan: &mut Vec<Draft>) {
    plan.push(Draft::agent("command", &cast.a, "/accept"));
    for i in 0..r.usize(2..=8) {
        let mut d = if i % 2 == 0 {
            Draft::agent("chat", &cast.a, AGENT_LINES[r.usize(..AGENT_LINES.len())])
        } else {
            Draft::new(
                "contact",
                "chat",
                None,
                CONTACT_REPLIES[r.usize(..CONTACT_REPLIES.len())].into(),
            )
        };
        d.keep_id = true;
        plan.push(d);
    }
}

/// The agent may like or comment on a message, fill in and send the organization's form, and
/// set a property.
fn extras(r: &mut fastrand::Rng, cast: &Cast, form: String, plan: &mut Vec<Draft>) {
    let a = &cast.a;
    // Likes and comments refer to a message sent earlier: resolved when emitted.
    if r.f32() < 0.25 {
        plan.push(Draft::agent("command", a, "/action like"));
    }
    if r.f32() < 0.1 {
        let comment = "/action comment Good lead, follow up Friday";
        plan.push(Draft::agent("command", a, comment));
    }
    if r.f32() < 0.15 {
        let meta = json!({ "form": form });
        // The form belongs to the "Used Car" category.
        plan.push(Draft::bot(&cast.bot, "/set @category Used Car".into()));
        plan.push(Draft::agent("form", a, "+Trade-in").meta(meta.clone()));
        plan.push(Draft::agent("field", a, ".make Volkswagen").meta(meta.clone()));
        plan.push(Draft::agent("field", a, ".model Golf").meta(meta.clone()));
        plan.push(Draft::agent("command", a, "/send").meta(meta));
    }
    if r.f32() < 0.2 {
        let set = if r.bool() {
            "/set engagement high"
        } else {
            "/set @language de"
        };
        plan.push(Draft::agent("command", a, set));
    }
}
