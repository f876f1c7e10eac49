//! The directory the generated traffic is written against: per organization three channels,
//! five agents, a bot and a trade-in form.

use crate::core::directory::{
    Category, Channel, DirectoryFile, Form, FormField, Organization, User, When, Workflow,
};

use super::model::{agent_id, bot_id, channel_id, form_id, organization_id, Model, AGENTS_PER_ORG};

/// The directory the traffic of `model` is written against.
pub fn directory(model: &Model) -> DirectoryFile {
    let seed = model.seed;
    let mut file = DirectoryFile::default();
    for o in 0..model.organizations() {
        file.organizations.push(organization(seed, o));
        file.channels.extend(channels(seed, o));
        file.users.extend(users(seed, o));
        file.forms.push(form(seed, o));
    }
    file
}

/// Two categories (the second with the form) and two workflows: urgent messages to one channel,
/// used cars to two others.
fn organization(seed: u64, o: u64) -> Organization {
    Organization {
        id: organization_id(seed, o),
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
    }
}

fn channels(seed: u64, o: u64) -> impl Iterator<Item = Channel> {
    [("app", true), ("slack", true), ("email", false)]
        .into_iter()
        .enumerate()
        .map(move |(c, (kind, online))| Channel {
            id: channel_id(seed, o, c as u64),
            organization: organization_id(seed, o),
            name: format!("{kind} {o}"),
            kind: kind.into(),
            online,
        })
}

/// The agents, then the bot.
fn users(seed: u64, o: u64) -> impl Iterator<Item = User> {
    let agents = (0..AGENTS_PER_ORG).map(move |a| User {
        id: agent_id(seed, o, a),
        organization: organization_id(seed, o),
        name: format!("Agent {o}.{a}"),
        email: Some(format!("agent{a}@dealer{o}.example")),
    });
    agents.chain(std::iter::once(User {
        id: bot_id(seed, o),
        organization: organization_id(seed, o),
        name: "Welcome Bot".into(),
        email: None,
    }))
}

fn form(seed: u64, o: u64) -> Form {
    Form {
        id: form_id(seed, o),
        organization: organization_id(seed, o),
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
    }
}
