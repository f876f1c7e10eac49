package switchboard.peer;

import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * The peer's output records: CloudEvents 1.0 in structured JSON mode, shaped as Switchboard's
 * (SPEC section 1), with IDs derived from the causing message's ID and the event's position.
 */
final class Events {
    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;
    private static final String SCHEMAS = "https://switchboard.example/schemas/events/";

    private Events() {}

    /** The one result of every message: `outcome`, with `code` unless applied. */
    static ObjectNode result(String conversation, String message, String time, String outcome,
            String code, long version) {
        ObjectNode data = NODES.objectNode();
        data.put("conversation", conversation);
        data.put("message", message);
        data.put("outcome", outcome);
        if (code != null) {
            data.put("code", code);
            data.put("detail", code.replace('_', ' '));
        } else {
            data.put("version", version);
        }
        return event(message + ":0", "chat.command.result", conversation, time, data);
    }

    /** A contact wrote: the organization's channels should look (routing is not modelled). */
    static ObjectNode notification(String conversation, String message, String time,
            String organization) {
        ObjectNode data = NODES.objectNode();
        data.put("conversation", conversation);
        data.put("organization", organization);
        data.put("reason", "message");
        return event(message + ":1", "chat.channel.notification", conversation, time, data);
    }

    private static ObjectNode event(String id, String type, String subject, String time,
            ObjectNode data) {
        ObjectNode e = NODES.objectNode();
        e.put("specversion", "1.0");
        e.put("id", id);
        e.put("source", "/switchboard-peer");
        e.put("type", type);
        if (subject != null) {
            e.put("subject", subject);
        }
        if (time != null) {
            e.put("time", time);
        }
        e.put("datacontenttype", "application/json");
        e.put("dataschema", SCHEMAS + type + ".schema.json");
        e.set("data", data);
        return e;
    }
}
