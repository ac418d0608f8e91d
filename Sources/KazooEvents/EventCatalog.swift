import JSONCore

// The schema of every event Kazoo sends, from ../shared/kazoo/delivery.md (read from Kazoo's source) and the
// event documentation. It drives type coercion, `switchboard events`, and later editor stubs.

private func s(_ name: String, _ summary: String = "") -> FieldSpec { FieldSpec(name, .string, summary) }
private func i(_ name: String, _ summary: String = "") -> FieldSpec { FieldSpec(name, .integer, summary) }
private func g(_ name: String, _ summary: String = "") -> FieldSpec { FieldSpec(name, .gregorianSeconds, summary) }
private func n(_ name: String, _ summary: String = "") -> FieldSpec { FieldSpec(name, .number, summary) }
private func b(_ name: String, _ summary: String = "") -> FieldSpec { FieldSpec(name, .boolean, summary) }
private func o(_ name: String, _ summary: String = "", _ members: [FieldSpec] = []) -> FieldSpec {
    FieldSpec(name, .object(members), summary)
}
private func a(_ name: String, _ element: FieldType, _ summary: String = "") -> FieldSpec {
    FieldSpec(name, .array(element), summary)
}
private func list(_ name: String, _ summary: String = "") -> FieldSpec { FieldSpec(name, .stringOrList, summary) }

/// The catalog of known events.
public enum EventCatalog {
    static let gregorianOffset: Int64 = 62_167_219_200

    // MARK: Channel events (webhooks_channel_util base_hook_event/3)

    static let channelFields: [FieldSpec] = [
        s("hook_event", "channel_create, channel_answer, channel_bridge or channel_destroy"),
        s("account_id", "the account the call belongs to"),
        s("call_id", "this leg's call id (a call has several legs)"),
        s("call_direction", "inbound or outbound, from the switch's point of view"),
        s("caller_id_name"), s("caller_id_number"), s("callee_id_name"), s("callee_id_number"),
        b("is_internal_leg", "true for loopback/internal legs"),
        g("timestamp", "when it happened, Gregorian seconds"),
        s("authorizing_id"), s("authorizing_type", "device, user, resource…"),
        b("call_forwarded"), b("emergency_resource_used"), b("local_resource_used"),
        s("local_resource_id", "present only when the resource is not global"),
        s("from"), s("to"), s("request", "absent on Kazoo master builds"), s("inception"),
        s("other_leg_call_id"), s("owner_id"), s("reseller_id"),
        o("custom_channel_vars", "raw CCVs with Kazoo Header-Case keys (Resource-Type…)"),
        o("custom_application_vars"),
        s("cluster_id", "32 hex characters, added to every payload since 4.3"),
    ]

    static let destroyFields: [FieldSpec] = [
        s("hangup_cause", "NORMAL_CLEARING, ORIGINATOR_CANCEL…"), s("hangup_code", "for example \"sip:487\""),
        i("duration_seconds"), i("ringing_seconds"), i("billing_seconds"),
    ]

    // MARK: Notifications (kapi_notifications)

    static let envelope: [FieldSpec] = [
        s("event_name", "the notification type"), s("event_category", "always \"notification\""),
        s("account_id"), s("app_name"), s("app_version"), s("msg_id", "unique per message; de-duplicate on it"),
        s("node"), s("server_id"), s("system_log_id"), s("cluster_id"),
        s("account_db"), s("attachment_url"), b("preview"), s("subject"), s("html"), s("text"),
        list("to"), list("cc"), list("bcc"), list("from"), list("reply_to"),
    ]

    /// The normalized CHANNEL_DESTROY carried in missed_call.notify and cf_notification.notify.
    static let notifyMembers: [FieldSpec] = [
        i("billing_seconds"), i("duration_seconds"), i("ringing_seconds"), g("timestamp"),
        o("custom_channel_vars"), o("custom_application_vars"),
    ]

    static let callParty: [FieldSpec] = [
        s("call_id"), s("caller_id_name"), s("caller_id_number"), s("from_realm"), s("from_user"),
        s("to_realm"), s("to_user"),
    ]

    static let faxInfo: FieldSpec = o("fax_info", "fax details, mostly strings", [b("fax_ecm_used"), b("fax_success")])
    static let fax: [FieldSpec] = [
        s("call_id"), s("caller_id_name"), s("caller_id_number"), s("callee_id_name"), s("callee_id_number"),
        s("fax_id"), s("faxbox_id"), s("owner_id"), faxInfo, o("fax_notifications"),
        g("fax_timestamp"), s("from_realm"), s("from_user"), s("to_realm"), s("to_user"),
    ]
    static let outboundFax: [FieldSpec] = [
        s("call_id"), s("caller_id_name"), s("caller_id_number"), s("callee_id_name"), s("callee_id_number"),
        s("fax_id"), s("fax_jobid"), s("faxbox_id"), faxInfo, o("fax_notifications"), g("fax_timestamp"),
    ]
    static let timestamped: [FieldSpec] = [s("account_id"), s("content"), g("timestamp"), s("user_id")]
    static let port: [FieldSpec] = [
        s("authorized_by"), b("local_number"), a("number", .string, "the numbers being ported"),
        s("number_state"), o("port", "the port request"), s("port_request_id"),
        o("reason", "why, with a Gregorian timestamp", timestamped), s("version"),
    ]
    static let registration: [FieldSpec] = [
        s("account_db"), s("authorizing_id"), s("authorizing_type"), s("call_id"), s("contact"),
        g("event_timestamp"), i("expires"), s("freeswitch_hostname"), s("from_host"), s("from_user"),
        s("network_ip"), s("network_port"), s("owner_id"), s("presence_hosts"), s("profile_name"), s("realm"),
        s("rpid"), s("status"), b("suppress_unregister_notify"), s("to_host"), s("to_user"), s("user_agent"),
        s("username"),
    ]
    static let payment: [FieldSpec] = [
        a("add_ons", .object([])), n("amount"), o("billing_address"), s("card_last_four"), s("currency_code"),
        a("discounts", .object([])), s("id"), s("purchase_order"), s("response"), o("service_plan"),
        b("success"), n("tax_amount"), g("timestamp"),
    ]
    static let voicemail: [FieldSpec] =
        callParty + [
            s("voicemail_box"), s("voicemail_id"), i("voicemail_length", "milliseconds"),
            g("voicemail_timestamp"),
        ]

    static let notificationTypes: [(String, String, [FieldSpec])] = [
        ("account_zone_change", "an account's home zone change was requested", [o("zones")]),
        (
            "bill_reminder", "estimated charges before the end of the month",
            [g("due_date"), a("items", .object([])), o("payment_token", "keyed by token id"), g("timestamp")]
        ),
        (
            "cf_notification", "a customer-defined notification from a callflow",
            callParty + [
                b("call_bridged"), s("comments"), b("message_left"), s("notification_media"),
                o("notify", "call data", notifyMembers), s("template_id"), g("timestamp"),
            ]
        ),
        (
            "cnam_request", "a CNAM change was requested",
            [
                s("acquired_for"), o("cnam", "", [b("inbound_lookup")]), b("local_number"), s("number"),
                s("number_state"),
            ]
        ),
        (
            "customer_update", "a message to customers from the reseller",
            [o("databag"), s("recipient_id"), s("template_id"), s("user_type")]
        ),
        (
            "denied_emergency_bridge", "an emergency call was denied",
            [
                s("call_id"), s("emergency_caller_id_name"), s("emergency_caller_id_number"),
                s("outbound_caller_id_name"), s("outbound_caller_id_number"),
            ]
        ),
        ("deregister", "a device unregistered", registration),
        (
            "emergency_bridge", "an emergency call was placed",
            [
                s("account_name"), s("authorizing_id"), s("call_id"), s("device_name"),
                s("emergency_address_city"), s("emergency_address_postal_code"), s("emergency_address_region"),
                s("emergency_address_street_1"), s("emergency_address_street_2"), s("emergency_caller_id_name"),
                s("emergency_caller_id_number"),
                a("emergency_notfication_contact_emails", .string, "sic: Kazoo's spelling"),
                b("emergency_test_call"), s("emergency_to_did"), s("outbound_caller_id_name"),
                s("outbound_caller_id_number"), s("owner_id"), s("user_email"), s("user_first_name"),
                s("user_last_name"),
            ]
        ),
        ("first_occurrence", "an account's first registration or call", [s("occurrence")]),
        ("inbound_fax", "a fax was received", fax),
        ("inbound_fax_error", "receiving a fax failed", fax + [s("fax_error"), s("fax_result_code")]),
        (
            "low_balance", "the account balance fell below its threshold",
            [n("current_balance", "in billing units")]
        ),
        (
            "missed_call", "a call was not answered",
            callParty + [
                b("call_bridged"), b("message_left"), o("notify", "the CHANNEL_DESTROY", notifyMembers),
                g("timestamp"),
            ]
        ),
        (
            "new_account", "an account was created",
            [s("account_api_key"), s("account_name"), s("account_realm")]
        ),
        ("new_user", "a user was created", [s("password"), s("user_id")]),
        ("number_feature_manual_action", "a number feature needs manual action", [o("feature"), s("number")]),
        ("outbound_fax", "a fax was sent", outboundFax),
        ("outbound_fax_error", "sending a fax failed", outboundFax + [s("fax_error")]),
        (
            "outbound_smtp_fax_error", "a fax-to-email request failed",
            [
                a("errors", .string), s("fax_from_email"), s("fax_to_email"), s("faxbox_id"), s("faxbox_name"),
                s("faxbox_timezone"), s("number"), s("original_number"), s("owner_id"), g("timestamp"),
            ]
        ),
        (
            "password_recovery", "a password reset was requested",
            [s("email"), s("first_name"), s("last_name"), s("password_reset_link"), s("timezone"), s("user_id")]
        ),
        ("port_cancel", "a port request was cancelled", port),
        (
            "port_comment", "a comment was added to a port request",
            port + [
                o(
                    "comment", "the comment, with a Gregorian timestamp",
                    timestamped + [b("action_required"), b("is_private")])
            ]
        ),
        ("port_pending", "a port request is pending", port),
        ("port_rejected", "a port request was rejected", port),
        ("port_request", "a port request was submitted", port),
        ("port_scheduled", "a port was scheduled", port),
        ("port_unconfirmed", "a port request awaits confirmation", port),
        ("ported", "numbers were ported", port),
        ("register", "a device registered", registration),
        (
            "service_added", "services were added to an account",
            [o("audit_log"), a("items", .object([])), g("timestamp")]
        ),
        (
            "system_alert", "a system alert (super-admin only)",
            [o("details"), i("line"), s("message"), s("module"), s("pid"), s("request_id"), s("section")]
        ),
        ("topup", "the account was topped up (the docs say top_up; Kazoo sends topup)", payment),
        ("transaction", "a payment transaction happened", payment),
        ("voicemail_deleted", "a voicemail was deleted", voicemail + [s("reason")]),
        (
            "voicemail_full", "a voicemail box is full",
            [i("max_message_count"), i("message_count"), s("voicemail_box")]
        ),
        ("voicemail_new", "a new voicemail was left", voicemail + [s("voicemail_transcription")]),
        ("voicemail_saved", "a voicemail was saved", voicemail),
        (
            "webhook", "the callflow webhook action (delivered to the action's own URI, see kind webhook)",
            [o("hook"), o("data"), g("timestamp")]
        ),
        (
            "webhook_disabled", "a webhook was auto-disabled after repeated failures (super-admin only)",
            [s("hook_id")]
        ),
    ]

    // MARK: Other hooks

    static let objectFields: [FieldSpec] = [
        s("id", "the document id; fetch the document yourself"), s("account_id"),
        s("action", "doc_created, doc_edited or doc_deleted"),
        s("type", "account, callflow, device, faxbox, media, user, vmbox, fax, mailbox_message, call_recording"),
        s("cluster_id"),
    ]
    static let parkingFields: [FieldSpec] = [
        s("event_name"), s("account_id"), s("call_id"), s("caller_id_name"), s("caller_id_number"),
        s("callee_id_name"), s("callee_id_number"), s("parking_slot", "a string, though the docs show a number"),
        s("cluster_id"),
    ]
    static let messageFields: [FieldSpec] = [
        s("id"), s("account_id"), s("type", "sms or mms"), s("from"), s("to"), s("body"),
        s("origin", "offnet"), n("charges"), s("cluster_id"),
    ]
    static let webhookFields: [FieldSpec] = [
        s("account_id"), s("call_id"), s("call_direction"), s("caller_id_name"), s("caller_id_number"),
        s("callee_id_name"), s("callee_id_number"), s("account_db"), s("authorizing_id"), s("authorizing_type"),
        s("bridge_id"), b("call_bridged"), o("custom_application_vars"), o("custom_sip_headers"), s("fetch_id"),
        s("from"), s("from_realm"), s("from_tag"), s("from_user"), s("inception"), b("is_recording"),
        b("is_call_forward"), s("language"), b("message_left"), s("other_leg_call_id"), s("owner_id"),
        s("request"), s("request_realm"), s("request_user"), s("resource_type"), s("switch_hostname"),
        s("switch_nodename"), s("switch_uri"), s("switch_url"), s("to"), s("to_realm"), s("to_tag"),
        s("to_user"), s("cluster_id"),
    ]

    // MARK: The catalog

    /// Every known event, in a stable order.
    public static let all: [EventSpec] = {
        var specs: [EventSpec] = [
            EventSpec(
                .channel, "channel_create", hook: "channel_create", "a channel (call leg) was created",
                fields: channelFields),
            EventSpec(
                .channel, "channel_answer", hook: "channel_answer", "a channel was answered",
                fields: channelFields),
            EventSpec(
                .channel, "channel_bridge", hook: "channel_bridge", "two channels were bridged",
                fields: channelFields + [s("original_number"), s("other_leg_destination_number")]),
            EventSpec(
                .channel, "channel_destroy", hook: "channel_destroy", "a channel hung up",
                fields: channelFields + destroyFields),
        ]
        for (name, summary, fields) in notificationTypes {
            specs.append(EventSpec(.notification, name, hook: "notifications", summary, fields: envelope + fields))
        }
        for action in objectActions {
            specs.append(
                EventSpec(
                    .object, action, hook: "object", "a document was \(action.dropFirst(4))",
                    fields: objectFields))
        }
        for (name, summary) in [
            ("PARK_PARKED", "a call was parked"), ("PARK_RETRIEVED", "a parked call was retrieved"),
            ("PARK_ABANDONED", "a parked caller hung up"),
        ] {
            specs.append(EventSpec(.parking, name, hook: "parking", summary, fields: parkingFields))
        }
        specs.append(EventSpec(.sms, "sms", hook: "sms", "an inbound offnet SMS (4.3+)", fields: messageFields))
        specs.append(EventSpec(.mms, "mms", hook: "mms", "an inbound offnet MMS (4.3+)", fields: messageFields))
        specs.append(
            EventSpec(
                .webhook, "webhook", hook: "webhook",
                "the callflow webhook action: the call record plus custom_data", fields: webhookFields))
        return specs
    }()

    static let objectActions = ["doc_created", "doc_edited", "doc_deleted"]

    /// Every known field name, at any depth, each once.
    public static let fieldNames: [String] = {
        var names: [String] = []
        var seen: Set<String> = []
        func collect(_ fields: [FieldSpec]) {
            for field in fields {
                if seen.insert(field.name).inserted { names.append(field.name) }
                var type = field.type
                while case .array(let element) = type { type = element }
                if case .object(let members) = type { collect(members) }
            }
        }
        for spec in all { collect(spec.fields) }
        return names
    }()

    /// Every spec by its name, made once. A class, so a lookup reads the tables where they are: the nested
    /// `KeyTable`s it replaced were copied out on every lookup (their arrays retained and released), and with the
    /// spec's own copy that was 3% of the bridge's instructions per event.
    final class Index: Sendable {
        /// `all`, each finding its fields from the keys the JSON reader shares.
        let specs: [EventSpec]
        /// A name's first position in `specs`.
        let first: KeyTable<Int>
        /// For each position, the next one with the same name (a name can have several kinds), or -1.
        let next: [Int]

        /// The keys the JSON reader shares instead of building per event: every known field name.
        let keys: KeyInterner

        init(_ all: [EventSpec], keys: KeyInterner) {
            self.keys = keys
            specs = all.map { $0.recognizing(keys) }
            var first: [(String, Int)] = []
            var last: [String: Int] = [:]
            var next = [Int](repeating: -1, count: all.count)
            for (position, spec) in all.enumerated() {
                if let previous = last[spec.name] {
                    next[previous] = position
                } else {
                    first.append((spec.name, position))
                }
                last[spec.name] = position
            }
            self.first = KeyTable(first)
            self.next = next
        }

        /// The position in `specs` of the event `kind`/`name`, if known.
        func position(kind: EventKind, name: String) -> Int? {
            guard let at = first.position(of: name) else { return nil }
            var position = first.value(at: at)
            while position >= 0 {
                if specs[position].kind == kind { return position }
                position = next[position]
            }
            return nil
        }
    }

    static let index = Index(all, keys: KeyInterner(fieldNames))

    /// The spec of a known event.
    public static func spec(kind: EventKind, name: String) -> EventSpec? {
        let index = index
        return index.position(kind: kind, name: name).map { index.specs[$0] }
    }

    /// Names of the hooks Kazoo lets a webhook subscribe to, plus `all` and the callflow `webhook` action.
    public static let hooks = [
        "channel_create", "channel_answer", "channel_bridge", "channel_destroy", "notifications", "object", "parking",
        "sms", "mms", "webhook", "all",
    ]

    static let channelNames: Set<String> = ["channel_create", "channel_answer", "channel_bridge", "channel_destroy"]
    static let notificationNames: Set<String> = Set(notificationTypes.map(\.0))
    static let parkingNames: Set<String> = ["PARK_PARKED", "PARK_RETRIEVED", "PARK_ABANDONED"]
}
