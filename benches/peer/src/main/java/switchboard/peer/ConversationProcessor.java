package switchboard.peer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Per input message, the shape of Switchboard's work without its command language: parse the
 * message, read the conversation's document, update it (version, message count, participants,
 * last message), store it and the message itself, and emit a CloudEvents result, plus a channel
 * notification for a contact's chat message.
 *
 * <p>What it leaves out, and Switchboard does: the commands themselves (status, routing over the
 * directory, forms, imports…), so one notification per contact chat message stands in for
 * Switchboard's routing (which notifies each routed channel when a contact writes to a closed or
 * queued conversation, and none when an agent has it); the other output topics (deliveries,
 * dequeues, inbox, email, bot commands); and the dead-letter topic (an unreadable record gets a
 * rejected result here).
 */
final class ConversationProcessor implements Processor<String, String, String, String> {
    static final String CONVERSATIONS = "conversations";
    static final String MESSAGES = "messages";
    static final String RESULTS = "results";
    static final String NOTIFICATIONS = "notifications";

    private static final ObjectMapper JSON = new ObjectMapper();

    private ProcessorContext<String, String> context;
    private KeyValueStore<String, String> conversations;
    private KeyValueStore<String, String> messages;

    @Override
    public void init(ProcessorContext<String, String> context) {
        this.context = context;
        this.conversations = context.getStateStore(CONVERSATIONS);
        this.messages = context.getStateStore(MESSAGES);
    }

    @Override
    public void process(Record<String, String> record) {
        String key = record.key();
        ObjectNode message = parse(record.value());
        if (message == null || key == null || !key.equals(message.path("conversation").asText(null))
                || !message.hasNonNull("id")) {
            reject(record, message, "invalid_message");
            return;
        }
        ObjectNode state = load(key, message);
        if (state == null) {
            reject(record, message, "unknown_conversation");
            return;
        }
        long index = apply(state, message);
        conversations.put(key, write(state));
        message.put("index", index);
        messages.put(key + "/" + message.get("id").asText(), write(message));
        String id = message.get("id").asText();
        forward(record, RESULTS, Events.result(key, id, time(message), "applied", null,
                state.get("version").asLong()));
        if (isContactChat(message)) {
            forward(record, NOTIFICATIONS, Events.notification(key, id, time(message),
                    state.get("organization").asText()));
        }
    }

    /** The conversation's document, a new one if the message creates it; null if it cannot. */
    private ObjectNode load(String key, ObjectNode message) {
        String stored = conversations.get(key);
        if (stored != null) {
            return parse(stored);
        }
        if (!message.hasNonNull("organization")) {
            return null;
        }
        ObjectNode state = JSON.createObjectNode();
        state.put("id", key);
        state.set("organization", message.get("organization"));
        state.set("createdAt", message.get("createdAt"));
        state.put("version", -1);
        state.put("messages", 0);
        state.putArray("participants");
        return state;
    }

    /** Applies the message to the document; returns the message's index in the log. */
    private static long apply(ObjectNode state, ObjectNode message) {
        long index = state.get("messages").asLong();
        state.put("messages", index + 1);
        state.put("version", state.get("version").asLong() + 1);
        state.set("updatedAt", message.get("createdAt"));
        state.set("lastMessage", message.get("id"));
        JsonNode sender = message.get("sender");
        if (sender != null && sender.isTextual()) {
            addParticipant((ArrayNode) state.get("participants"), sender.asText());
        }
        return index;
    }

    private static void addParticipant(ArrayNode participants, String user) {
        for (JsonNode p : participants) {
            if (p.asText().equals(user)) {
                return;
            }
        }
        participants.add(user);
    }

    /**
     * Switchboard notifies channels for a contact's chat message (SPEC section 5); which ones,
     * and whether at all, depends on status and routing, which the peer does not model.
     */
    private static boolean isContactChat(JsonNode message) {
        String role = message.path("role").asText("bot");
        return "chat".equals(message.path("type").asText())
                && ("contact".equals(role) || "consumer".equals(role));
    }

    private void reject(Record<String, String> record, ObjectNode message, String code) {
        String id = message == null ? "" : message.path("id").asText("");
        String time = message == null ? null : time(message);
        forward(record, RESULTS, Events.result(record.key(), id, time, "rejected", code, -1));
    }

    private void forward(Record<String, String> record, String sink, ObjectNode event) {
        context.forward(record.withValue(write(event)), sink);
    }

    private static String time(JsonNode message) {
        return message.path("createdAt").asText(null);
    }

    private static ObjectNode parse(String json) {
        try {
            JsonNode node = json == null ? null : JSON.readTree(json);
            return node instanceof ObjectNode o ? o : null;
        } catch (JsonProcessingException e) {
            return null;
        }
    }

    private static String write(JsonNode node) {
        try {
            return JSON.writeValueAsString(node);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("a JSON tree always serialises", e);
        }
    }
}
