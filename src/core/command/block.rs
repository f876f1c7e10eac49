//! `/block`: the contact may post no more, and the conversation closes.

use crate::core::code::{ignore, Code};
use crate::core::directory::{block_time, Block};
use crate::core::event::DequeueReason;
use crate::core::state::Status;
use crate::core::transition::{Handled, Step, Verdict};

pub fn block(step: &mut Step<'_>) -> Handled {
    if step.conv.blocked && step.conv.status == Status::Closed {
        return Err(ignore(
            Code::NoChange,
            "the conversation is already blocked and closed",
        ));
    }
    if let Some(ip) = step.conv.contact.ip.clone() {
        step.blocks.push(Block {
            organization: step.conv.organization.clone(),
            ip,
            since: block_time(step.msg.created_at_nanos),
        });
    }
    step.conv.blocked = true;
    let sender = step.sender().to_string();
    step.set_status(Status::Closed, DequeueReason::Block, Some(&sender));
    Ok(Verdict::Applied)
}
